"""Resume on the tiny model: a seeded run stopped at step k and resumed equals the run left
alone (same loss at every step, bit-identical LoRA tensors), the step count continues, and a
changed config is refused or allowed as engine/outputs/resume.py's policy says."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from small_dataset import small_dataset
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.control.run_control import RunControl
from engine.events.types import Failed, RunStarted, Saved, Step, Warning_


def _stop_at(step: int):
    control = RunControl()

    def on_event(event):
        if isinstance(event, Step) and event.step == step:
            control.request_stop("test")

    return control, on_event


def _stopped_run(cfg, step: int):
    control, on_event = _stop_at(step)
    run = train(cfg, control, on_event=on_event)
    assert run.result.ok and run.result.stopped and run.result.step == step, run.result.error
    return run


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


@pytest.mark.e2e
def test_stopped_and_resumed_run_equals_the_uninterrupted_one_bit_for_bit(tmp_path, tiny_model, demo_dataset):
    """One run stopped twice, mid-epoch (step 2) and at the last step of epoch 1 (step 4; four
    images at batch size 1 make 4 steps per epoch), each time resumed, equals the 6 steps left alone."""
    data = small_dataset(tmp_path / "data", demo_dataset, images=4)
    whole = train(tiny_config(tmp_path / "whole", tiny_model, data, max_train_steps=6))
    assert whole.result.ok, whole.result.error
    assert whole.of(RunStarted)[0].steps_per_epoch == 4
    cfg = tiny_config(tmp_path / "split", tiny_model, data, max_train_steps=6)
    first = _stopped_run(cfg, 2)
    control, on_event = _stop_at(4)
    middle = train(cfg, control, on_event=on_event, resume=True)
    assert middle.result.ok and middle.result.stopped and middle.result.step == 4, middle.result.error
    resumed = train(cfg, resume=True)
    assert resumed.result.ok, resumed.result.error
    # the global step continues: never restarted
    assert middle.of(RunStarted)[0].resumed_from_step == 2
    assert resumed.of(RunStarted)[0].resumed_from_step == 4
    assert [e.step for e in middle.of(Step)] == [3, 4]
    assert [e.step for e in resumed.of(Step)] == [5, 6]
    assert resumed.result.step == 6
    # the same loss at every step, exactly (not approximately)
    assert first.losses + middle.losses + resumed.losses == whole.losses
    print(f"{len(whole.losses)} losses equal, e.g. step 6 {whole.losses[-1]!r}")
    _assert_same_tensors(resumed.lora(), whole.lora())


@pytest.mark.e2e
def test_resume_with_gradient_accumulation_and_epoch_saves(tmp_path, tiny_model, demo_dataset):
    # 3 images at batch size 1, 2 batches a step: an epoch is 2 steps, the second of one batch
    data = small_dataset(tmp_path / "data", demo_dataset, images=3)
    options = dict(max_train_steps=4, gradient_accumulation_steps=2, save_every_n_epochs=1, save_state=True, **FAST)
    whole = train(tiny_config(tmp_path / "whole", tiny_model, data, **options))
    assert whole.of(RunStarted)[0].steps_per_epoch == 2
    cfg = tiny_config(tmp_path / "split", tiny_model, data, **options)
    first = _stopped_run(cfg, 1)
    resumed = train(cfg, resume=True)
    assert resumed.result.ok, resumed.result.error
    assert first.losses + resumed.losses == whole.losses
    _assert_same_tensors(resumed.lora(), whole.lora())
    epoch_saves = [e for e in whole.of(Saved) if e.kind == "lora" and "-0000" in Path(e.path).name]
    assert epoch_saves, "an epoch save was expected: 3 batches in steps of 2 make an epoch of 2 steps"
    name = Path(epoch_saves[0].path).name
    assert name in [Path(e.path).name for e in resumed.of(Saved)], "the epoch save comes after the resume"
    _assert_same_tensors(resumed.lora(name), whole.lora(name))


@pytest.mark.e2e
def test_resume_is_exact_with_uncached_latents_dropout_workers_8bit_and_a_schedule(tmp_path, tiny_model,
                                                                                   demo_dataset):
    """VAE sampling every step and LoRA dropout draw from the torch RNG the state restores; the
    image loader's workers must not draw from it; 8-bit optimizer and cosine schedule states
    come back exactly."""
    options = dict(max_train_steps=4, cache_latents=False, network_dropout=0.1, max_data_loader_n_workers=2,
                   optimizer_type="AdamW8bit", lr_scheduler="cosine", lr_warmup_steps=1, **FAST)
    whole = train(tiny_config(tmp_path / "whole", tiny_model, demo_dataset, **options))
    cfg = tiny_config(tmp_path / "split", tiny_model, demo_dataset, **options)
    first = _stopped_run(cfg, 2)
    resumed = train(cfg, resume=True)
    assert resumed.result.ok, resumed.result.error
    assert first.losses + resumed.losses == whole.losses
    _assert_same_tensors(resumed.lora(), whole.lora())


# ---------------------------------------------------------------- the config policy


def _policy_setup(tmp_path, tiny_model, demo_dataset, **options):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=6, **options)
    _stopped_run(cfg, 2)
    return cfg


@pytest.fixture(scope="module")
def stopped_once(tmp_path_factory, tiny_model, demo_dataset):
    tmp = tmp_path_factory.mktemp("stopped")
    return _policy_setup(tmp, tiny_model, demo_dataset)


@pytest.fixture()
def stopped(stopped_once, tmp_path):
    """A run of 6 steps stopped at step 2, in a copy of its folder of this test's own."""
    out = tmp_path / "run"
    shutil.copytree(stopped_once.saving.output_dir, out)
    return tmp_path, stopped_once.with_values(output_dir=str(out))


@pytest.mark.e2e
def test_state_holds_everything_resume_needs(stopped_once):
    from engine.outputs import checkpoint

    folder = Path(stopped_once.saving.output_dir) / "state" / "step-00000002"
    names = {p.name for p in folder.iterdir()}
    assert {"lora.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "rng.json", "progress.json",
            "config.toml", "COMPLETE"} <= names
    state = checkpoint.load_state(folder)
    assert state.progress.global_step == 2 and state.progress.batches_done_in_epoch == 2
    assert len(state.progress.dataset_hash) == 64
    assert {"python", "numpy", "torch"} <= set(state.rng)
    assert state.optimizer["state"], "optimizer moments were saved"


def _never_load(monkeypatch):
    import engine.model.load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the config was refused")

    monkeypatch.setattr(engine.model.load, "load_sdxl", refuse)


@pytest.mark.parametrize("change, shown", [
    (dict(network_dim=8), "network.network_dim: 4 → 8"),
    (dict(network_alpha=1.0), "network.network_alpha: 4.0 → 1.0"),
    (dict(network_args=["conv_dim=4"]), "network.network_args: [] → [\"conv_dim=4\"]"),
    (dict(network_train_unet_only=True), "network.network_train_unet_only: False → True"),
    (dict(optimizer_type="SGD"), 'optimizer.optimizer_type: "AdamW" → "SGD"'),
    (dict(seed=8), "training.seed: 7 → 8"),
    (dict(max_train_steps=2), "the run is already at step 2"),
])
def test_fixed_options_are_refused_before_the_model_loads(stopped, tiny_model, demo_dataset, monkeypatch,
                                                          change, shown):
    tmp, cfg = stopped
    out = Path(cfg.saving.output_dir)
    saved_config = (out / "config.toml").read_text()
    _never_load(monkeypatch)
    run = train(cfg.with_values(**change), resume=True)
    assert run.result.exit_code == 78
    failed = run.of(Failed)[-1]
    assert shown in failed.message, failed.message
    assert "network_weights" in failed.hint
    assert (out / "config.toml").read_text() == saved_config, "a refused resume must not touch the run"


def test_a_different_model_is_refused(stopped, tiny_model, demo_dataset, monkeypatch, tmp_path):
    tmp, cfg = stopped
    other = tmp_path / "model_copy"
    shutil.copytree(tiny_model.diffusers_dir, other)
    _never_load(monkeypatch)
    run = train(cfg.with_values(pretrained_model_name_or_path=str(other)), resume=True)
    assert run.result.exit_code == 78
    assert "model.pretrained_model_name_or_path" in run.of(Failed)[-1].message


@pytest.mark.e2e
def test_allowed_changes_are_listed_and_the_run_continues(stopped, tiny_model, demo_dataset):
    tmp, cfg = stopped
    changed = cfg.with_values(max_train_steps=4, save_every_n_steps=3, log_every_n_steps=2, learning_rate=5e-4)
    run = train(changed, resume=True)
    assert run.result.ok, run.result.error
    notes = " ".join(w.message for w in run.of(Warning_))
    for text in ("training.max_train_steps: 6 → 4", "saving.save_every_n_steps: unset → 3",
                 "logging.log_every_n_steps: 1 → 2", "optimizer.learning_rate: 0.001 → 0.0005"):
        assert text in notes, notes
    assert run.of(RunStarted)[0].resumed_from_step == 2 and run.result.step == 4
    assert [e.step for e in run.of(Saved) if e.kind == "lora"][0] == 3


@pytest.mark.e2e
def test_changed_dataset_is_refused_after_the_scan(tmp_path, tiny_model, demo_dataset):
    data = small_dataset(tmp_path / "data", demo_dataset, images=2)  # a copy of our own to change
    cfg = tiny_config(tmp_path, tiny_model, data, max_train_steps=6, **FAST)
    _stopped_run(cfg, 1)
    caption = sorted(data.image_dir.glob("*.txt"))[0]
    caption.write_text("a completely different caption", encoding="utf-8")
    run = train(cfg, resume=True)
    assert run.result.exit_code == 78
    assert "dataset differs" in run.of(Failed)[-1].message


@pytest.mark.e2e
def test_incomplete_states_are_ignored_and_reported(stopped, tiny_model, demo_dataset):
    tmp, cfg = stopped
    root = Path(cfg.saving.output_dir) / "state"
    good = root / "step-00000002"
    unmarked = root / "step-00000005"
    shutil.copytree(good, unmarked)
    (unmarked / "COMPLETE").unlink()
    (unmarked / "lora.safetensors").write_bytes(b"half a file")
    staging = root / ".step-00000006.tmp"
    staging.mkdir()
    run = train(cfg.with_values(max_train_steps=3), resume=True)  # one step is enough to show the choice
    assert run.result.ok, run.result.error
    assert run.of(RunStarted)[0].resumed_from_step == 2
    notes = [w.message for w in run.of(Warning_)]
    assert any("ignoring incomplete saved state step-00000005 (no COMPLETE marker)" in n for n in notes), notes
    assert any("ignoring incomplete saved state .step-00000006.tmp" in n for n in notes), notes


def test_resume_without_any_complete_state_says_why(tmp_path, tiny_model, demo_dataset, monkeypatch):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=6)
    out = Path(cfg.saving.output_dir)
    (out / "state" / "step-00000004").mkdir(parents=True)
    _never_load(monkeypatch)
    run = train(cfg, resume=True)
    assert run.result.exit_code == 73
    message = run.of(Failed)[-1].message
    assert "no complete saved state" in message and "step-00000004 (no COMPLETE marker)" in message


def test_policy_unit_allowed_and_refused_lists():
    from engine.config.schema import RunConfig
    from engine.outputs.checkpoint import Position
    from engine.outputs.resume import compare_configs

    saved = RunConfig().with_values(max_train_steps=100, network_dim=16, lr_scheduler="cosine")
    new = saved.with_values(max_train_steps=200, network_dim=32, sample_every_n_steps=50, log_with="tensorboard")
    diff = compare_configs(saved, new, Position(global_step=50, epoch=0, batches_done_in_epoch=50))
    assert [c.key for c in diff.refused] == ["network.network_dim"]
    allowed = {c.key for c in diff.allowed}
    assert {"training.max_train_steps", "sampling.sample_every_n_steps", "logging.log_with",
            "optimizer.lr_scheduler"} <= allowed  # the schedule note: it stretches to the new length
    moved = compare_configs(saved, saved.with_values(output_dir="/elsewhere"))
    assert not moved.refused and not moved.allowed


def test_scan_states_sorts_complete_from_unfinished(tmp_path):
    from engine.outputs.resume import REQUIRED_STATE_FILES, scan_states

    root = tmp_path / "state"

    def folder(name: str, files=REQUIRED_STATE_FILES):
        (root / name).mkdir(parents=True)
        for file in files:
            (root / name / file).write_text("x")

    folder("step-00000004")
    folder("step-00000008", [f for f in REQUIRED_STATE_FILES if f != "optimizer.pt"])  # cut short mid-removal
    folder("step-00000009", [f for f in REQUIRED_STATE_FILES if f != "COMPLETE"])
    folder(".step-00000010.tmp", ["lora.safetensors"])
    folder("notes")
    complete, incomplete = scan_states(tmp_path)
    assert [p.name for p in complete] == ["step-00000004"]
    assert sorted(str(i) for i in incomplete) == [
        "ignoring incomplete saved state .step-00000010.tmp (a save that never finished)",
        "ignoring incomplete saved state step-00000008 (missing optimizer.pt)",
        "ignoring incomplete saved state step-00000009 (no COMPLETE marker)",
    ]
