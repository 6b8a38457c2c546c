"""The validation loss (issue 14, sd-scripts' validate_every_n_steps / validate_every_n_epochs /
max_validation_steps on the validation_split images): when it is computed, that it leaves the
training untouched (the LoRA is bit-identical with and without it), that it is repeatable, and
where it goes (events.jsonl, TensorBoard)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import Validation
from engine.train.validation import timestep_groups, validation_timesteps

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def test_validation_timesteps_are_sd_scripts_linspace_grouped_into_calls():
    assert validation_timesteps(None, None, 1000) == [200, 400, 600, 800]
    assert validation_timesteps(100, 500, 1000) == [180, 260, 340, 420]
    four = [200, 400, 600, 800]
    assert timestep_groups(four, 1) == [four]  # one call of 4 samples
    assert timestep_groups(four, 2) == [[200, 400], [600, 800]]
    assert timestep_groups(four, 4) == [[200], [400], [600], [800]]  # as sd-scripts: a call per timestep


def _held_out_dataset(tmp_path: Path, demo_dataset) -> Path:
    text = demo_dataset.dataset_toml.read_text().replace("batch_size = 2\n",
                                                          "batch_size = 2\nvalidation_split = 0.25\n")
    path = tmp_path / "held_out.toml"
    path.write_text(text)
    return path


@pytest.mark.e2e
def test_validation_loss_cadence_repeatable_and_leaves_the_lora_bit_identical(tmp_path, tiny_model, demo_dataset):
    import torch

    dataset = str(_held_out_dataset(tmp_path, demo_dataset))
    common = dict(dataset_config=dataset, max_train_steps=2, network_dropout=0.1, **FAST)
    validated = train(tiny_config(tmp_path / "a", tiny_model, demo_dataset, validate_every_n_steps=1,
                                  max_validation_steps=1, log_with="tensorboard", **common))
    # the same held-out images, but no evaluation falls in this run (epoch 100 never comes)
    plain = train(tiny_config(tmp_path / "b", tiny_model, demo_dataset, validate_every_n_epochs=100, **common))
    assert validated.result.ok and plain.result.ok
    assert plain.of(Validation) == []
    found = validated.of(Validation)
    # steps 1 and 2, then the epoch validation of the epoch max_train_steps cut short (as sd-scripts)
    assert [(v.kind, v.step, v.epoch) for v in found] == [("step", 1, 1), ("step", 2, 1), ("epoch", 2, 1)]
    assert all(v.batches == 1 and math.isfinite(v.loss) and v.loss > 0 for v in found)
    assert found[1].loss == found[2].loss  # the same weights evaluate to the same value
    assert found[0].loss != found[1].loss  # ... and other weights to another
    a, b = validated.lora(), plain.lora()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert validated.losses == plain.losses
    from safetensors import safe_open  # sd-scripts' ss_* validation keys

    with safe_open(validated.result.lora_path, framework="pt") as handle:
        meta = handle.metadata()
    assert (meta["ss_validate_every_n_steps"], meta["ss_max_validation_steps"], meta["ss_validation_split"],
            meta["ss_num_validation_images"], meta["ss_validate_every_n_epochs"]) == ("1", "1", "0.25", "3", "None")
    # events.jsonl and TensorBoard, under sd-scripts' keys
    lines = (Path(validated.result.output_dir) / "events.jsonl").read_text().splitlines()
    assert sum('"type": "Validation"' in line for line in lines) == 3
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = next(Path(validated.result.output_dir, "logs").glob("*/network_train"))
    accumulator = EventAccumulator(str(logs))
    accumulator.Reload()
    assert [(s.step, pytest.approx(s.value)) for s in accumulator.Scalars("loss/validation/step_average")] == \
        [(1, found[0].loss), (2, found[1].loss)]
    assert [s.step for s in accumulator.Scalars("loss/validation/epoch_average")] == [2]
