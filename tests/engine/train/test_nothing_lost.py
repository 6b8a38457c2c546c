"""Issue 15 item 6: nothing trained is lost. Failures injected into sampling, into a save and
into the loop; the closing message says what was kept."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import Failed, Saved, Step, Warning_

events: list = []  # what a run that raised emitted (train() returns nothing then)


@pytest.fixture(autouse=True)
def _fresh_events():
    events.clear()


@pytest.mark.e2e
def test_a_failing_sample_is_a_warning_and_training_goes_on(tmp_path, tiny_model, demo_dataset, monkeypatch):
    import engine.outputs.sampling as sampling

    def broken(*args, **kwargs):
        raise RuntimeError("injected sampler failure")

    monkeypatch.setattr(sampling, "generate_samples", broken)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=3, sample_every_n_steps=1,
                      sample_prompts=str(demo_dataset.sample_prompts))
    run = train(cfg)
    assert run.result.ok and run.result.step == 3
    warnings = [w.message for w in run.of(Warning_) if "sampling at step" in w.message]
    assert warnings == [f"sampling at step {n} failed (RuntimeError: injected sampler failure); no samples this "
                        "time, training goes on" for n in (1, 2, 3)]
    assert Path(run.result.lora_path).is_file() and Path(run.result.lora_path).name == "lora.safetensors"


@pytest.mark.e2e
def test_a_failure_in_the_loop_saves_the_lora_and_state_of_the_last_step(tmp_path, tiny_model, demo_dataset,
                                                                       monkeypatch):
    from engine.train.loop import Trainer

    real = Trainer.batch_loss
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected loop failure")
        return real(self, batch)

    monkeypatch.setattr(Trainer, "batch_loss", failing)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=5, save_state=True)
    with pytest.raises(RuntimeError, match="injected loop failure"):
        train(cfg, on_event=lambda e: events.append(e))
    failed = [e for e in events if isinstance(e, Failed)][0]
    kept = tmp_path / "out" / "lora-step00000002.safetensors"
    assert failed.last_good == str(kept) and kept.is_file()
    assert "of step 2 (the last completed step) were saved" in failed.hint
    assert [e.kind for e in events if isinstance(e, Saved)] == ["lora", "state"]
    from safetensors.torch import load_file

    weights = load_file(str(kept))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert any(t.abs().sum() > 0 for k, t in weights.items() if "lora_up" in k)  # two steps moved it
    assert [e.step for e in events if isinstance(e, Step)] == [1, 2]


@pytest.mark.e2e
def test_a_failing_save_is_retried_once_and_the_message_tells_the_truth(tmp_path, tiny_model, demo_dataset,
                                                                        monkeypatch):
    import engine.outputs.checkpoint as checkpoint

    real = checkpoint.save_lora_file
    calls = {"n": 0}

    def flaky(path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("injected save failure")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_lora_file", flaky)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=4, save_every_n_steps=2)
    with pytest.raises(RuntimeError, match="injected save failure"):
        train(cfg, on_event=lambda e: events.append(e))
    failed = [e for e in events if isinstance(e, Failed)][0]
    assert failed.step == 2 and failed.last_good.endswith("lora-step00000002.safetensors")
    assert Path(failed.last_good).is_file()

    from sdxl_tui.run_model import RunModel, final_lines

    model = RunModel(output_dir=str(tmp_path / "out"))
    for event in events:
        model.apply(event)
    text = "\n".join(line for line, _ in final_lines(model.view(0.0)))
    assert f"Last good LoRA: {failed.last_good}" in text and "No LoRA was saved" not in text


@pytest.mark.e2e
def test_a_save_that_fails_again_is_said_and_nothing_claims_a_lora(tmp_path, tiny_model, demo_dataset, monkeypatch):
    import engine.outputs.checkpoint as checkpoint

    def broken(path, *args, **kwargs):
        raise RuntimeError("injected save failure")

    monkeypatch.setattr(checkpoint, "save_lora_file", broken)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=4, save_every_n_steps=2)
    with pytest.raises(RuntimeError):
        train(cfg, on_event=lambda e: events.append(e))
    failed = [e for e in events if isinstance(e, Failed)][0]
    assert failed.last_good == ""
    assert "saving the LoRA of step 2 after the failure failed too (RuntimeError: injected save failure)" in failed.hint
