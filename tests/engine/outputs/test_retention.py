"""Keeping saves (issue 14): save_last_n_steps, save_last_n_steps_state, save_last_n_epochs_state,
save_state_on_train_end, save_n_epoch_ratio, and the LoRA of an earlier end kept when a resume
ends. Each test fails if its option did nothing."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import safe_open
from small_dataset import small_dataset
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import Saved
from engine.outputs import retention

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


@pytest.fixture(scope="module")
def one_image_dataset(tmp_path_factory, demo_dataset):
    """One demo image at batch size 1: one step per epoch, so epoch options show in a few steps."""
    return small_dataset(tmp_path_factory.mktemp("one_image"), demo_dataset)


def _names(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("*.safetensors"))


def _states(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "state").iterdir() if not p.name.startswith("."))


def _steps_of(path: Path) -> str:
    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()["ss_steps"]


def _saving(**values):
    base = dict(save_n_epoch_ratio=None, save_every_n_epochs=None, save_last_n_steps=None,
                save_last_n_steps_state=None, save_last_n_epochs=None, save_last_n_epochs_state=None)
    base.update(values)
    return SimpleNamespace(**base)


def test_save_n_epoch_ratio_is_floor_of_epochs_over_ratio_at_least_one():
    # sd-scripts: save_every_n_epochs = floor(num_train_epochs / save_n_epoch_ratio) or 1
    assert retention.epoch_save_interval(_saving(save_n_epoch_ratio=3), 10) == 3
    assert retention.epoch_save_interval(_saving(save_n_epoch_ratio=5, save_every_n_epochs=7), 4) == 1
    assert retention.epoch_save_interval(_saving(save_every_n_epochs=2), 10) == 2
    assert retention.epoch_save_interval(_saving(), 10) is None


def test_save_last_n_steps_counts_steps_not_files(tmp_path):
    # sd-scripts' example: every=10, N=30 -> at step 50 the saves 20..50 remain
    for step in (10, 20, 30, 40, 50):
        (tmp_path / f"lora-step{step:08d}.safetensors").write_bytes(b"x")
    removed = retention.prune_step_files(tmp_path, "lora", 50, 30)
    assert [p.name for p in removed] == ["lora-step00000010.safetensors"]
    assert [s for s, _ in retention.step_saves(tmp_path, "lora")] == [20, 30, 40, 50]


def test_state_keep_count_follows_the_state_options_then_the_lora_ones():
    assert retention.state_keep_count(_saving(save_last_n_epochs_state=5, save_last_n_epochs=2)) == 5
    assert retention.state_keep_count(_saving(save_last_n_epochs=3)) == 3
    assert retention.state_keep_count(_saving(save_last_n_steps=3)) is None  # pruned by step instead
    assert retention.state_keep_count(_saving()) == 2


@pytest.mark.e2e
def test_save_last_n_steps_and_save_last_n_steps_state_prune_by_step(tmp_path, tiny_model, one_image_dataset):
    run = train(tiny_config(tmp_path, tiny_model, one_image_dataset, max_train_steps=6, save_every_n_steps=1,
                            save_last_n_steps=2, save_state=True, save_last_n_steps_state=1, **FAST))
    assert run.result.ok, run.result.error
    out = Path(run.result.output_dir)
    # step saves 1..5 were written; at step 5 those older than 5 - 2 = 3 went
    assert [e.step for e in run.of(Saved) if e.kind == "lora"] == [1, 2, 3, 4, 5, 6]
    assert _names(out) == ["lora-step00000003.safetensors", "lora-step00000004.safetensors",
                           "lora-step00000005.safetensors", "lora.safetensors"]
    # states 1..6 were written; at the end (6) those older than 6 - 1 = 5 went
    assert _states(out) == ["step-00000005", "step-00000006"]


@pytest.mark.e2e
def test_save_last_n_epochs_state_keeps_more_states_than_the_default(tmp_path, tiny_model, one_image_dataset):
    run = train(tiny_config(tmp_path, tiny_model, one_image_dataset, max_train_steps=None, max_train_epochs=4,
                            save_every_n_epochs=1, save_state=True,
                            save_last_n_epochs_state=3, **FAST))
    assert run.result.ok, run.result.error
    # one step per epoch: epoch states at 1, 2, 3 and the end state at 4; the newest 3 stay (default: 2)
    assert _states(Path(run.result.output_dir)) == ["step-00000002", "step-00000003", "step-00000004"]


@pytest.mark.e2e
def test_save_n_epoch_ratio_sets_the_epoch_save_interval(tmp_path, tiny_model, one_image_dataset):
    run = train(tiny_config(tmp_path, tiny_model, one_image_dataset, max_train_steps=None, max_train_epochs=4,
                            save_n_epoch_ratio=2, **FAST))
    assert run.result.ok, run.result.error
    # floor(4 / 2) = 2: a save after epoch 2; epoch 4 is the end (the final file)
    assert _names(Path(run.result.output_dir)) == ["lora-000002.safetensors", "lora.safetensors"]


@pytest.mark.e2e
def test_save_state_on_train_end_and_resume_keeps_the_earlier_final_lora(tmp_path, tiny_model, demo_dataset):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2, save_state_on_train_end=True, **FAST)
    first = train(cfg)
    assert first.result.ok, first.result.error
    out = Path(first.result.output_dir)
    assert _states(out) == ["step-00000002"]  # save_state is off: only the end state
    before = (out / "lora.safetensors").read_bytes()
    resumed = train(cfg.with_values(max_train_steps=3), resume=True)
    assert resumed.result.ok, resumed.result.error
    assert _names(out) == ["lora-step00000002.safetensors", "lora.safetensors"]
    assert (out / "lora-step00000002.safetensors").read_bytes() == before
    assert _steps_of(out / "lora.safetensors") == "3"
    assert _states(out) == ["step-00000002", "step-00000003"]
