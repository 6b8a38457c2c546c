"""Each training option changes what a run does (each test fails if its option did nothing)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from small_dataset import small_dataset
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import RunStarted, Sample, Saved, Step

# UNet only with cached text outputs: the fastest run, for options that are not about text encoders.
FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


@pytest.fixture(scope="module")
def one_image(tmp_path_factory, demo_dataset):
    """One demo image at batch size 1, for the options whose effect does not depend on the data
    (half the work of a demo batch of 2)."""
    return small_dataset(tmp_path_factory.mktemp("one_image"), demo_dataset)


_RUNS: dict = {}  # finished runs that several tests read, by their options


def _shared(tmp_path_factory, tiny_model, demo_dataset, **options):
    """One run per dataset and set of options in this process (tests only read its events and files)."""
    key = (str(demo_dataset.dataset_toml), *sorted(options.items()))
    if key not in _RUNS:
        _RUNS[key] = train(tiny_config(tmp_path_factory.mktemp("shared"), tiny_model, demo_dataset, **options))
    assert _RUNS[key].result.ok, _RUNS[key].result.error
    return _RUNS[key]


ONE_SGD_STEP = dict(max_train_steps=1, optimizer_type="SGD", max_grad_norm=0.0, learning_rate=1e-2)


def _parts(tensors: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"unet": [], "te1": [], "te2": []}
    for key in tensors:
        out[key.split("_")[1]].append(key)
    return out


@pytest.mark.e2e
def test_unet_only_writes_no_text_encoder_keys_and_default_trains_both_encoders(tmp_path, tmp_path_factory,
                                                                                tiny_model, one_image):
    unet_only = _shared(tmp_path_factory, tiny_model, one_image, max_train_steps=2, **FAST)
    both = train(tiny_config(tmp_path / "b", tiny_model, one_image, max_train_steps=2))
    assert not _parts(unet_only.lora())["te1"] and not _parts(unet_only.lora())["te2"]
    tensors = both.lora()
    for part in ("te1", "te2"):
        ups = [tensors[k] for k in _parts(tensors)[part] if k.endswith("lora_up.weight")]
        assert ups and any(t.abs().max() > 0 for t in ups), f"{part} was not trained"


@pytest.mark.e2e
def test_three_learning_rates_are_three_groups_moving_at_their_rates(tmp_path, tmp_path_factory, tiny_model,
                                                                     one_image):
    # One SGD step from zero-initialised lora_up: the update is -lr * grad, and the gradient of
    # the first step is the same in both runs, so each part's update scales with its own rate.
    same = _shared(tmp_path_factory, tiny_model, one_image, **ONE_SGD_STEP)
    split = train(tiny_config(tmp_path / "b", tiny_model, one_image, unet_lr=1e-2, text_encoder_lr1=2e-2,
                              text_encoder_lr2=4e-2, **ONE_SGD_STEP))
    assert split.of(Step)[0].lr == pytest.approx({"unet": 1e-2, "te1": 2e-2, "te2": 4e-2})
    a, b = same.lora(), split.lora()
    for part, factor in (("unet", 1.0), ("te1", 2.0), ("te2", 4.0)):
        ups = [k for k in _parts(a)[part] if k.endswith("lora_up.weight")]
        assert any(a[k].abs().max() > 0 for k in ups), f"{part} did not move"
        for key in ups:
            torch.testing.assert_close(b[key], a[key] * factor, rtol=1e-4, atol=1e-9)


@pytest.mark.e2e
def test_text_encoder_rate_zero_freezes_that_encoder(tmp_path, tiny_model, one_image):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=2, text_encoder_lr1=0.0))
    assert set(run.of(Step)[0].lr) == {"unet", "te2"}
    tensors = run.lora()
    assert all(tensors[k].abs().max() == 0 for k in _parts(tensors)["te1"] if k.endswith("lora_up.weight"))


@pytest.mark.e2e
def test_conv_lora_adds_conv_modules(tmp_path, tmp_path_factory, tiny_model, one_image):
    plain = _shared(tmp_path_factory, tiny_model, one_image, max_train_steps=1, **FAST).lora()
    conv = train(tiny_config(tmp_path / "c", tiny_model, one_image, max_train_steps=1,
                             network_args=["conv_dim=2", "conv_alpha=1"], **FAST)).lora()
    added = set(conv) - set(plain)
    assert any("in_layers_2" in k for k in added) and any("out_layers_3" in k for k in added)
    downs = [conv[k] for k in added if k.endswith("lora_down.weight") and conv[k].dim() == 4]
    # 3x3 convs get conv_dim; 1x1 convs (skip connections) the network_dim, as in sd-scripts
    assert downs and all(t.shape[0] == (2 if t.shape[-1] == 3 else 4) for t in downs)
    assert any(t.shape[-1] == 3 for t in downs)


@pytest.mark.e2e
def test_gradient_accumulation_groups_batches_into_steps(tmp_path, tiny_model, demo_dataset):
    three = small_dataset(tmp_path / "data", demo_dataset, images=3)
    single = train(tiny_config(tmp_path / "1", tiny_model, three, max_train_steps=None, max_train_epochs=1, **FAST))
    grouped = train(tiny_config(tmp_path / "2", tiny_model, three, max_train_steps=None, max_train_epochs=1,
                                gradient_accumulation_steps=2, **FAST))
    # 3 batches per epoch: 3 steps, or ceil(3 / 2) = 2 steps (the last one from 1 batch)
    assert single.of(RunStarted)[0].steps_per_epoch == 3 and len(single.losses) == 3
    assert grouped.of(RunStarted)[0].steps_per_epoch == 2 and [s.step for s in grouped.of(Step)] == [1, 2]
    assert grouped.of(RunStarted)[0].total_steps == 2


@pytest.mark.e2e
def test_noise_offset_and_min_snr_change_the_loss(tmp_path, tmp_path_factory, tiny_model, demo_dataset):
    def first_loss(name: str, **options) -> float:
        return train(tiny_config(tmp_path / name, tiny_model, demo_dataset, max_train_steps=1, **FAST,
                                 **options)).losses[0]

    base = _shared(tmp_path_factory, tiny_model, demo_dataset, max_train_steps=1, **FAST).losses[0]
    assert first_loss("offset", noise_offset=0.5) != pytest.approx(base, rel=1e-4)
    # min(SNR, 1) / SNR <= 1 on the same draws: the weighted loss is strictly smaller (on the demo batch of
    # 2; one image's single timestep may have SNR <= 1, where the weight is 1)
    assert first_loss("snr", min_snr_gamma=1.0) < base


@pytest.mark.e2e
def test_v_prediction_model_trains_on_velocity(tmp_path, tmp_path_factory, tiny_model, one_image):
    model = tmp_path / "v-model"
    shutil.copytree(tiny_model.diffusers_dir, model)
    config_file = model / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config["prediction_type"] = "v_prediction"
    config_file.write_text(json.dumps(config))
    eps = _shared(tmp_path_factory, tiny_model, one_image, max_train_steps=1, **FAST)
    v = train(tiny_config(tmp_path / "v", tiny_model, one_image, max_train_steps=1,
                          pretrained_model_name_or_path=str(model), **FAST))
    assert v.result.ok, v.result.error
    assert v.losses[0] != pytest.approx(eps.losses[0], rel=1e-4)


@pytest.mark.e2e
def test_save_every_n_steps_names_files_like_sd_scripts(tmp_path, tiny_model, one_image):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=5, save_every_n_steps=2, **FAST))
    names = sorted(p.name for p in Path(run.result.output_dir).glob("*.safetensors"))
    assert names == ["lora-step00000002.safetensors", "lora-step00000004.safetensors", "lora.safetensors"]
    assert [(e.step, e.kind) for e in run.of(Saved)] == [(2, "lora"), (4, "lora"), (5, "lora")]


@pytest.mark.e2e
def test_save_every_n_epochs_with_save_last_n_epochs_keeps_the_newest(tmp_path, tiny_model, demo_dataset):
    one = small_dataset(tmp_path / "data", demo_dataset)
    run = train(tiny_config(tmp_path, tiny_model, one, max_train_steps=None, max_train_epochs=4,
                            save_every_n_epochs=1, save_last_n_epochs=2,
                            save_state=True, sample_every_n_epochs=2, sample_prompts=str(demo_dataset.sample_prompts),
                            **FAST))
    out = Path(run.result.output_dir)
    # samples after epochs 2 and 4 (steps 2 and 4: one step per epoch), named by epoch
    assert sorted({s.step for s in run.of(Sample)}) == [2, 4]
    assert all(Path(s.path).is_file() for s in run.of(Sample))
    saved = [Path(e.path).name for e in run.of(Saved) if e.kind == "lora"]
    assert saved == ["lora-000001.safetensors", "lora-000002.safetensors", "lora-000003.safetensors",
                     "lora.safetensors"]
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == ["lora-000002.safetensors", "lora-000003.safetensors", "lora.safetensors"]
    assert (out / "state" / "step-00000004" / "COMPLETE").exists()


@pytest.mark.parametrize("precision,dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                             ("fp32", torch.float32)])
@pytest.mark.e2e
def test_save_precision_sets_the_file_dtype(tmp_path_factory, tiny_model, one_image, precision, dtype):
    # (fp32, tiny_config's own, is the run the other one-step tests read)
    tensors = _shared(tmp_path_factory, tiny_model, one_image, max_train_steps=1, **FAST,
                      **({} if precision == "fp32" else {"save_precision": precision})).lora()
    weights = [t for k, t in tensors.items() if k.endswith(".weight")]
    assert weights and all(t.dtype == dtype for t in weights)


@pytest.mark.e2e
@pytest.mark.parametrize("scheduler", ["linear", "cosine", "constant_with_warmup", "polynomial"])
def test_schedulers_set_the_rate_of_each_step(tmp_path, tiny_model, one_image, scheduler):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=4, lr_scheduler=scheduler,
                            lr_warmup_steps=0.5 if scheduler == "constant_with_warmup" else 0,
                            lr_scheduler_power=2.0, learning_rate=1e-3, **FAST))
    # a Step reports the rate the next optimizer step will use: transformers' own schedule after 1..4 steps
    from transformers import get_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    library = get_scheduler(scheduler, optimizer, num_warmup_steps=2 if scheduler == "constant_with_warmup" else 0,
                            num_training_steps=4,
                            scheduler_specific_kwargs={"power": 2.0} if scheduler == "polynomial" else None)
    rates = []
    for _ in range(4):
        optimizer.step()
        library.step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert [s.lr["unet"] for s in run.of(Step)] == pytest.approx(rates)


@pytest.mark.e2e
def test_network_weights_continues_from_a_file(tmp_path, tmp_path_factory, tiny_model, one_image):
    first = _shared(tmp_path_factory, tiny_model, one_image, max_train_steps=2, **FAST)
    # a rate so small that the second run leaves the loaded weights as they are
    second = train(tiny_config(tmp_path / "b", tiny_model, one_image, max_train_steps=1, optimizer_type="SGD",
                               learning_rate=1e-30, network_weights=first.result.lora_path, **FAST))
    a, b = first.lora(), second.lora()
    assert any(t.abs().max() > 0 for k, t in a.items() if k.endswith("lora_up.weight"))
    for key in a:
        torch.testing.assert_close(b[key], a[key])


@pytest.mark.e2e
def test_gradient_checkpointing_recomputes_and_gives_the_same_loss(tmp_path, tiny_model, one_image, monkeypatch):
    import torch.utils.checkpoint as checkpoint_module

    calls = []
    original = checkpoint_module.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "checkpoint", counting)
    plain = train(tiny_config(tmp_path / "p", tiny_model, one_image, max_train_steps=2, **FAST))
    assert not calls
    checkpointed = train(tiny_config(tmp_path / "c", tiny_model, one_image, max_train_steps=2,
                                     gradient_checkpointing=True, **FAST))
    assert calls, "gradient checkpointing was not used"
    assert checkpointed.losses == pytest.approx(plain.losses, rel=1e-5)


@pytest.mark.e2e
def test_max_grad_norm_clips_the_update(tmp_path, tiny_model, one_image):
    def update_norm(name: str, max_grad_norm: float) -> float:
        tensors = train(tiny_config(tmp_path / name, tiny_model, one_image, max_train_steps=1, optimizer_type="SGD",
                                    learning_rate=1.0, max_grad_norm=max_grad_norm, **FAST)).lora()
        # lora_up starts at zero, so after one SGD step it is -lr * (clipped) gradient
        return float(torch.cat([t.flatten() for k, t in tensors.items() if k.endswith("lora_up.weight")]).norm())

    assert update_norm("free", 0.0) > 1e-3
    assert update_norm("clipped", 1e-3) <= 1e-3 * 1.001


@pytest.mark.e2e
def test_bf16_mixed_precision_runs_on_cpu_and_keeps_lora_fp32(tmp_path, tiny_model, one_image):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=2, mixed_precision="bf16",
                            save_state=True, **FAST))
    assert run.result.ok, run.result.error
    assert all(torch.isfinite(torch.tensor(loss)) for loss in run.losses)
    from safetensors.torch import load_file

    state = load_file(str(Path(run.result.output_dir) / "state" / "step-00000002" / "lora.safetensors"))
    assert all(t.dtype == torch.float32 for t in state.values())


@pytest.mark.parametrize("optimizer,args", [("AdamW8bit", []), ("Lion", []), ("Adafactor", []),
                                            ("Adafactor", ["relative_step=True", "warmup_init=True"]),
                                            ("Prodigy", ["d_coef=2"])])
@pytest.mark.e2e
def test_optimizers_train_in_the_loop(tmp_path, tiny_model, one_image, optimizer, args):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=2, optimizer_type=optimizer,
                            optimizer_args=args, learning_rate=1.0 if optimizer == "Prodigy" else 1e-3, **FAST))
    assert run.result.ok, run.result.error
    ups = [t for k, t in run.lora().items() if k.endswith("lora_up.weight")]
    assert any(t.abs().max() > 0 for t in ups)


@pytest.mark.e2e
def test_tensorboard_scalars_are_written(tmp_path, tiny_model, one_image):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=2, log_with="tensorboard",
                            log_prefix="demo-", **FAST))
    files = list((Path(run.result.output_dir) / "logs").glob("demo-*/network_train/events.out.tfevents*"))
    assert files
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(files[0].parent))
    accumulator.Reload()
    assert "loss/current" in accumulator.Tags()["scalars"]
    assert [e.step for e in accumulator.Scalars("loss/current")] == [1, 2]


@pytest.mark.e2e
def test_metrics_are_read_only_every_log_every_n_steps(tmp_path, tiny_model, one_image):
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=7, log_every_n_steps=3, **FAST))
    steps = run.of(Step)
    assert [s.step for s in steps] == [3, 6, 7]  # and the last step, however it falls
    assert steps[0].eta_seconds == pytest.approx(4 * steps[0].seconds_per_step)


@pytest.mark.e2e
@pytest.mark.parametrize("no_half_vae,expected", [(True, torch.float32), (False, torch.bfloat16)])
def test_no_half_vae_keeps_the_vae_in_fp32(tmp_path, tiny_model, one_image, monkeypatch, no_half_vae, expected):
    import engine.model.encode as text_encoding

    seen = []
    original = text_encoding.vae_encode

    def recording(vae, pixels, *args, **kwargs):
        seen.append(vae.dtype)
        return original(vae, pixels, *args, **kwargs)

    monkeypatch.setattr(text_encoding, "vae_encode", recording)
    run = train(tiny_config(tmp_path, tiny_model, one_image, max_train_steps=1, mixed_precision="bf16",
                            no_half_vae=no_half_vae, cache_latents=False, **FAST))
    assert run.result.ok, run.result.error
    assert seen and set(seen) == {expected}


@pytest.mark.e2e
def test_gradient_checkpointing_on_trained_text_encoders_keeps_their_gradients(tmp_path, tmp_path_factory,
                                                                               tiny_model, one_image):
    # Checkpointed encoder layers must still pass gradients to their LoRA (frozen embeddings
    # feed them, the classic way to lose them silently). One SGD step from zero lora_up: each
    # up matrix is -lr * its gradient.
    plain = _shared(tmp_path_factory, tiny_model, one_image, **ONE_SGD_STEP).lora()
    checkpointed = train(tiny_config(tmp_path / "c", tiny_model, one_image, gradient_checkpointing=True,
                                     **ONE_SGD_STEP)).lora()
    te_ups = [k for k in plain if k.startswith("lora_te") and k.endswith("lora_up.weight")]
    assert any(checkpointed[k].abs().max() > 0 for k in te_ups)
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-5, atol=1e-8)
