"""engine.train.run end to end on the tiny model: it learns, the LoRA loads in diffusers, runs are
reproducible, fused backward equals the plain loop, and commands / NaN / resume behave."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from small_dataset import small_dataset
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.control.run_control import RunControl
from engine.events.types import Failed, Finished, Phase, RunStarted, Sample, Saved, Step, event_from_json

OVERFIT_STEPS = 20


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, tiny_model, demo_dataset):
    """20 steps with conv LoRA at a high rate on two demo images in one batch of 2: every step sees
    the same images, so the LoRA overfits them in a few steps (the 12 demo images took 60)."""
    tmp = tmp_path_factory.mktemp("overfit")
    two_images = small_dataset(tmp / "data", demo_dataset, images=2, batch_size=2)
    cfg = tiny_config(tmp, tiny_model, two_images, max_train_steps=OVERFIT_STEPS, learning_rate=1e-2,
                      network_dim=8, network_alpha=8.0, network_args=["conv_dim=8", "conv_alpha=8"])
    return train(cfg)


@pytest.fixture(scope="module")
def one_image(tmp_path_factory, demo_dataset):
    """One demo image at batch size 1: half the work of a demo batch of 2, for the tests whose
    property (reproducibility, fused backward, commands) does not depend on the data."""
    return small_dataset(tmp_path_factory.mktemp("one_image"), demo_dataset)


def test_overfit_run_lowers_the_loss_clearly(overfit):
    assert overfit.result.ok, overfit.result.error
    losses = overfit.losses
    assert len(losses) == OVERFIT_STEPS
    fifth = len(losses) // 5
    first, last = sum(losses[:fifth]) / fifth, sum(losses[-fifth:]) / fifth
    print(f"overfit: mean loss of first {fifth} steps {first:.3f} -> last {fifth} steps {last:.3f}")
    assert last < 0.7 * first


def test_run_reports_and_writes_what_it_did(overfit):
    out = Path(overfit.result.output_dir)
    assert (out / "config.toml").is_file()
    names = [type(e).__name__ for e in overfit.events]
    assert names[0] == "Phase" and names[-1] == "Finished"
    phases = [e.name for e in overfit.of(Phase)]
    assert phases[:3] == ["loading_model", "scanning_dataset", "caching_latents"]
    started = overfit.of(RunStarted)[0]
    assert started.total_steps == OVERFIT_STEPS and started.batch_size == 2
    step = overfit.of(Step)[-1]
    assert step.step == OVERFIT_STEPS and step.seconds_per_step > 0 and step.memory.rss > 0
    assert set(step.lr) == {"unet", "te1", "te2"}
    # events.jsonl replays into the very events the run emitted
    replayed = [event_from_json(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert replayed == overfit.events
    from engine.config.toml_file import load_config

    assert load_config(out / "config.toml").network.network_args == ["conv_dim=8", "conv_alpha=8"]


def test_lora_loads_in_diffusers_with_no_keys_left_and_changes_the_unet(overfit, tiny_model):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model.diffusers_dir)
    unet = pipe.unet
    torch.manual_seed(0)
    sample = torch.randn(1, 4, 8, 8)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim)
    pooled = torch.randn(1, pipe.text_encoder_2.config.projection_dim)
    cond = {"text_embeds": pooled, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        before = unet(sample, 500, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
    state_dict, _ = pipe.lora_state_dict(overfit.result.lora_path)
    pipe.load_lora_weights(overfit.result.lora_path)
    with torch.no_grad():
        after = unet(sample, 500, encoder_hidden_states=hidden, added_cond_kwargs=cond).sample
    assert (after - before).abs().max() > 1e-3
    # every tensor of the file became an adapter weight somewhere (nothing left over)
    loaded = sum(len(m.lora_A) for m in list(unet.modules()) + list(pipe.text_encoder.modules())
                 + list(pipe.text_encoder_2.modules()) if hasattr(m, "lora_A"))
    from safetensors import safe_open

    with safe_open(overfit.result.lora_path, "pt") as handle:
        downs = [k for k in handle.keys() if k.endswith("lora_down.weight")]
    assert loaded == len(downs)


@pytest.mark.e2e
def test_same_seed_gives_same_losses_and_tensors(tmp_path, tiny_model, one_image):
    runs = [train(tiny_config(tmp_path / str(i), tiny_model, one_image, max_train_steps=2)) for i in range(2)]
    other = train(tiny_config(tmp_path / "other", tiny_model, one_image, max_train_steps=2, seed=8))
    assert runs[0].losses == runs[1].losses
    a, b = runs[0].lora(), runs[1].lora()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert other.losses != runs[0].losses


@pytest.mark.e2e
@pytest.mark.parametrize("optimizer", ["SGD", "AdamW"])
def test_fused_backward_gives_the_same_weights_as_the_plain_loop(tmp_path, tiny_model, one_image, optimizer):
    options = dict(max_train_steps=3, optimizer_type=optimizer, learning_rate=1e-2, max_grad_norm=0.0)
    plain = train(tiny_config(tmp_path / "plain", tiny_model, one_image, **options))
    fused = train(tiny_config(tmp_path / "fused", tiny_model, one_image, fused_backward_pass=True, **options))
    assert fused.result.ok, fused.result.error
    a, b = plain.lora(), fused.lora()
    moved = [k for k in a if k.endswith("lora_up.weight") and a[k].abs().max() > 0]
    assert moved, "the plain run did not train"
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_fused_backward_really_steps_in_the_hook(tmp_path, tiny_model, one_image):
    """During backward no two LoRA gradients are alive at once: each is freed in its own hook."""
    import engine.train.fused_backward as fb

    peaks = []
    original = fb.FusedBackward._hook

    def spying_hook(self, child, parent_group):
        step = original(self, child, parent_group)

        def wrapped(param):
            live = sum(1 for p in self.parent.param_groups for q in p["params"] if q.grad is not None)
            peaks.append(live)
            step(param)

        return wrapped

    fb.FusedBackward._hook = spying_hook
    try:
        result = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=1, fused_backward_pass=True,
                                   max_grad_norm=0.0))
    finally:
        fb.FusedBackward._hook = original
    assert result.result.ok
    assert peaks and max(peaks) == 1


@pytest.mark.e2e
def test_stop_request_saves_lora_and_state_then_finishes(tmp_path, tiny_model, one_image):
    control = RunControl()

    def stop_at_two(event):
        if isinstance(event, Step) and event.step == 2:
            control.request_stop()

    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=10), control, on_event=stop_at_two)
    finished = run.of(Finished)[-1]
    assert finished.stopped and finished.step == 2 and run.result.stopped
    assert Path(finished.lora_path).name == "lora-step00000002.safetensors"
    assert (Path(run.result.output_dir) / "state" / "step-00000002" / "COMPLETE").exists()
    assert not (Path(run.result.output_dir) / "lora.safetensors").exists()


@pytest.mark.e2e
def test_save_now_and_sample_now_commands(tmp_path, tiny_model, demo_dataset):
    control = RunControl()

    def commands(event):
        if isinstance(event, Step) and event.step == 1:
            control.save_now()
            control.sample_now()

    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2,
                            sample_prompts=str(demo_dataset.sample_prompts)), control, on_event=commands)
    assert run.result.ok
    saved = [(e.kind, e.step) for e in run.of(Saved)]
    assert ("lora", 1) in saved and ("state", 1) in saved
    samples = run.of(Sample)
    assert samples and all(Path(s.path).is_file() and s.step == 1 for s in samples)


@pytest.mark.e2e
def test_nan_loss_stops_with_step_files_and_fix(tmp_path, tiny_model, demo_dataset):
    # SGD at an absurd rate overflows the weights within a few steps.
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=30, optimizer_type="SGD",
                      learning_rate=1e12, max_grad_norm=0.0, save_every_n_steps=1, log_every_n_steps=5)
    run = train(cfg)
    assert not run.result.ok and run.result.exit_code == 70
    failed = run.of(Failed)[-1]
    assert failed.kind == "TrainingDiverged" and "step" in failed.message and ".png" in failed.message
    # fp32 run: the advice names the rate and the clipping that is off, not fp16's no_half_vae
    assert "lower the learning rate (now 1e+12)" in failed.hint and "max_grad_norm = 1.0" in failed.hint
    assert "no_half_vae" not in failed.hint
    # the last good checkpoint is kept, and it holds finite numbers
    assert failed.last_good and Path(failed.last_good).is_file()
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(failed.last_good).values())
    assert failed.step > int(Path(failed.last_good).stem.split("step")[-1])


@pytest.mark.e2e
def test_existing_run_is_refused_and_resume_continues_the_step_count(tmp_path, tiny_model, demo_dataset):
    control = RunControl()

    def stop_at_two(event):
        if isinstance(event, Step) and event.step == 2:
            control.request_stop()

    fast = dict(max_train_steps=3, network_train_unet_only=True, cache_text_encoder_outputs=True)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, **fast)
    first = train(cfg, control, on_event=stop_at_two)
    assert first.result.stopped
    again = train(cfg)
    assert again.result.exit_code == 73 and "resume" in again.of(Failed)[-1].hint
    resumed = train(cfg, resume=True)
    assert resumed.result.ok and resumed.of(RunStarted)[0].resumed_from_step == 2
    assert [e.step for e in resumed.of(Step)] == [3]
    uninterrupted = train(tiny_config(tmp_path / "whole", tiny_model, demo_dataset, **fast))
    assert first.losses + resumed.losses == pytest.approx(uninterrupted.losses, rel=1e-6)
    a, b = resumed.lora(), uninterrupted.lora()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=1e-7)


@pytest.mark.e2e
def test_samples_at_first_and_every_n_steps(tmp_path, tiny_model, demo_dataset):
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2, sample_every_n_steps=2,
                            sample_at_first=True, sample_prompts=str(demo_dataset.sample_prompts),
                            network_train_unet_only=True))
    assert run.result.ok, run.result.error
    by_step = {}
    for sample in run.of(Sample):
        by_step.setdefault(sample.step, []).append(sample)
        assert Path(sample.path).parent.name == "sample" and Path(sample.path).stat().st_size > 0
    assert sorted(by_step) == [0, 2]
    prompts = [line for line in demo_dataset.sample_prompts.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert len(by_step[2]) == len(prompts)


@pytest.mark.e2e
def test_events_are_valid_json_lines(tmp_path, tiny_model, demo_dataset):
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1))
    lines = (Path(run.result.output_dir) / "events.jsonl").read_text().splitlines()
    assert all(json.loads(line)["type"] for line in lines)
    assert not math.isnan(run.losses[0])


@pytest.mark.e2e
def test_fused_backward_run_resumes_with_its_optimizer_state(tmp_path, tiny_model, one_image):
    """The per-parameter optimizers' state is what a fused run saves and restores: the run resumed
    from the state it saved at step 2 (as a stop there saves it) ends as the uninterrupted run did."""
    import shutil

    options = dict(max_train_steps=3, fused_backward_pass=True, max_grad_norm=0.0, learning_rate=1e-2,
                   save_every_n_steps=2, save_state=True)
    cfg = tiny_config(tmp_path / "whole", tiny_model, one_image, **options)
    whole = train(cfg)
    assert whole.result.ok, whole.result.error
    out = Path(whole.result.output_dir)
    state = torch.load(out / "state" / "step-00000002" / "optimizer.pt", weights_only=True)
    # (adapters on text encoder 1's last layer have no state: its output is never used by SDXL)
    assert state["children"] and sum(bool(child["state"]) for child in state["children"]) > len(state["children"]) // 2
    ended = whole.lora()
    shutil.rmtree(out / "state" / "step-00000003")  # the half-way state is now the newest
    resumed = train(cfg, resume=True)
    assert resumed.result.ok and resumed.of(RunStarted)[0].resumed_from_step == 2
    assert whole.losses[:2] + resumed.losses == whole.losses
    again = resumed.lora()
    assert again.keys() == ended.keys() and all(torch.equal(again[k], ended[k]) for k in ended)


@pytest.mark.e2e
def test_engine_run_stays_callable_after_the_submodule_is_imported(tmp_path, tiny_model, demo_dataset):
    import engine
    import engine.train.run  # noqa: F401  (rebinds the package attribute to the submodule)

    events = []
    result = engine.run(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1), events.append)
    assert result.ok and isinstance(events[-1], Finished)


def test_stop_before_training_ends_without_files(tmp_path, tiny_model, demo_dataset):
    control = RunControl()

    def stop_while_loading(event):
        if isinstance(event, Phase) and event.name == "loading_model":
            control.request_stop()

    run = train(tiny_config(tmp_path, tiny_model, demo_dataset), control, on_event=stop_while_loading)
    assert run.result.ok and run.result.stopped and run.result.step == 0
    assert not run.of(Step) and not list(Path(run.result.output_dir).glob("*.safetensors"))
