"""initial_epoch / initial_step / skip_until_initial_step (issue 14), as sd-scripts' train_network.py
treats them: with skip_until_initial_step the data of the first steps is skipped and the step count
continues; without it only the epoch count starts later."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open
from small_dataset import small_dataset
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.rules import check_rules
from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.events.types import RunStarted, Step
from engine.train.initial_step import initial_start

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def _training(**values):
    base = dict(initial_step=None, initial_epoch=None, skip_until_initial_step=False, gradient_accumulation_steps=1)
    base.update(values)
    return SimpleNamespace(**base)


def _meta(path: str) -> dict:
    with safe_open(path, framework="pt") as handle:
        return handle.metadata()


def test_initial_start_positions():
    kw = dict(steps_per_epoch=4, batches_per_epoch=8, total_steps=20, total_epochs=5)
    assert initial_start(_training(), **kw) is None
    skip = initial_start(_training(initial_step=6, skip_until_initial_step=True, gradient_accumulation_steps=2), **kw)
    assert (skip.global_step, skip.epoch, skip.batches_done_in_epoch, skip.loop_steps) == (6, 1, 4, 20)
    epochs = initial_start(_training(initial_epoch=3), **kw)  # (3 - 1) x 4 = step 8: epoch 2, nothing skipped
    assert (epochs.global_step, epochs.epoch, epochs.batches_done_in_epoch, epochs.loop_steps) == (0, 2, 0, 12)
    both = initial_start(_training(initial_epoch=3, initial_step=1, skip_until_initial_step=True), **kw)
    assert both.global_step == 1  # initial_step wins
    with pytest.raises(ConfigError, match="initial_step"):
        initial_start(_training(initial_step=20), **kw)
    issues = check_rules(RunConfig().with_values(initial_step=5, max_train_steps=5, dataset_config="d.toml"))
    assert any(i.level == "error" and "initial_step" in i.keys for i in issues)


@pytest.mark.e2e
def test_skip_until_initial_step_continues_the_step_count(tmp_path, tiny_model, demo_dataset):
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=6, initial_step=4,
                            skip_until_initial_step=True, **FAST))
    assert run.result.ok, run.result.error
    assert [e.step for e in run.of(Step)] == [5, 6]
    assert run.of(RunStarted)[0].resumed_from_step == 4
    assert _meta(run.result.lora_path)["ss_steps"] == "6"


@pytest.mark.e2e
def test_initial_epoch_without_skip_only_starts_the_epoch_count_later(tmp_path, tiny_model, demo_dataset):
    # one step per epoch (one image at batch size 1): 3 epochs from epoch 2 are 2 steps
    one = small_dataset(tmp_path / "data", demo_dataset)
    run = train(tiny_config(tmp_path, tiny_model, one, max_train_steps=None, max_train_epochs=3,
                            initial_epoch=2, save_every_n_epochs=1, **FAST))
    assert run.result.ok, run.result.error
    assert [e.step for e in run.of(Step)] == [1, 2]
    assert sorted(p.name for p in Path(run.result.output_dir).glob("*.safetensors")) == [
        "lora-000002.safetensors", "lora.safetensors"]
    assert _meta(run.result.lora_path)["ss_epoch"] == "3"
