"""The `resume` option (issue 14): our state folder is read (the run continues from that state,
bit-identical to the run it came from), sd-scripts' state folder is refused by name before any
model loads, naming `sdxl-tui resume`."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.errors import ConfigError
from engine.events.types import RunStarted, Step
from engine.outputs.resume_option import resume_problem

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def test_sd_scripts_state_folder_is_refused_with_the_command_to_use(tmp_path, tiny_model, demo_dataset):
    folder = tmp_path / "last-state"
    folder.mkdir()
    for name in ("optimizer.bin", "random_states_0.pkl", "model.safetensors"):
        (folder / name).write_bytes(b"x")
    assert "sdxl-tui resume" in resume_problem(str(folder))
    assert "not a folder" in resume_problem(str(tmp_path / "nowhere"))
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, resume=str(folder)))
    assert isinstance(run.result.error, ConfigError) and run.result.exit_code == 78
    assert "sd-scripts" in run.result.error.message and not run.of(RunStarted)


@pytest.mark.e2e
def test_resume_option_continues_from_the_named_state_bit_identically(tmp_path, tiny_model, demo_dataset):
    first = train(tiny_config(tmp_path / "a", tiny_model, demo_dataset, max_train_steps=3, save_every_n_steps=2,
                              save_state=True, **FAST))
    assert first.result.ok, first.result.error
    state = Path(first.result.output_dir) / "state" / "step-00000002"
    again = train(tiny_config(tmp_path / "b", tiny_model, demo_dataset, max_train_steps=3, save_every_n_steps=2,
                              save_state=True, resume=str(state), **FAST))
    assert again.result.ok, again.result.error
    assert again.of(RunStarted)[0].resumed_from_step == 2
    assert [e.step for e in again.of(Step)] == [3]
    assert again.losses == first.losses[2:]
    a, b = first.lora(), again.lora()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
