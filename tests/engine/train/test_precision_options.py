"""Precision options (issue 14): fp8_base / fp8_base_unet store the frozen weights as
float8_e4m3fn and training still lowers the loss; full_bf16 / full_fp16 keep the LoRA itself in
half precision; the VRAM estimate counts both; bad combinations are refused before loading."""
from __future__ import annotations

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.plan.vram import estimate_vram
from engine.train import network_setup
from engine.train.precision import check_precision_options, compute_dtype_of, store_weights_fp8

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def test_store_weights_fp8_keeps_the_layer_output_within_fp8_rounding():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.Conv2d(8, 8, 1)).to(torch.bfloat16)
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    before = layer[0](x)
    rounded = torch.nn.functional.linear(x, layer[0].weight.detach().to(torch.float8_e4m3fn).to(torch.bfloat16),
                                         layer[0].bias)
    assert store_weights_fp8(layer, torch.bfloat16) == 16 * 8 + 8 * 8
    stored = layer[0].parametrizations.weight.original
    assert stored.dtype == torch.float8_e4m3fn and not stored.requires_grad
    assert layer[0].weight.dtype == torch.bfloat16
    assert torch.equal(layer[0](x), rounded)  # exactly a bf16 layer with fp8-rounded weights
    assert not torch.equal(rounded, before)
    assert compute_dtype_of(layer, torch.float32) == torch.bfloat16


def test_bad_precision_combinations_are_refused_by_name():
    for values, key in ((dict(full_bf16=True, mixed_precision="fp16"), "full_bf16"),
                        (dict(full_fp16=True, mixed_precision="bf16"), "full_fp16"),
                        (dict(fp8_base=True, mixed_precision="no"), "fp8_base")):
        with pytest.raises(ConfigError) as caught:
            check_precision_options(RunConfig().with_values(**values))
        assert caught.value.key == key and caught.value.exit_code == 78


def test_vram_estimate_counts_fp8_base_and_half_precision_lora():
    base = RunConfig().with_values(mixed_precision="bf16", cache_text_encoder_outputs=False)
    fp8 = estimate_vram(base.with_values(fp8_base=True))
    bf16 = estimate_vram(base)
    assert fp8.unet_weights == pytest.approx(bf16.unet_weights / 2)
    assert fp8.text_encoders < bf16.text_encoders
    assert estimate_vram(base.with_values(fp8_base_unet=True)).text_encoders == bf16.text_encoders
    assert estimate_vram(base.with_values(full_bf16=True)).lora_and_optimizer < bf16.lora_and_optimizer


@pytest.mark.e2e
def test_fp8_base_stores_float8_and_training_lowers_the_loss(tmp_path, tiny_model, demo_dataset, monkeypatch):
    seen = {}
    build = network_setup.build_network

    def recording_build(session):  # this run's model, as the trainer will use it
        network = build(session)
        model = session.model
        seen["unet"] = {p.dtype for n, p in model.unet.named_parameters() if n.endswith(".original")}
        seen["te"] = {p.dtype for n, p in model.text_encoder2.named_parameters() if n.endswith(".original")}
        return network

    monkeypatch.setattr(network_setup, "build_network", recording_build)
    # the overfit recipe of test_train_loop (conv LoRA, high rate), UNet-only with cached text outputs;
    # 12 steps (bf16 steps are slow on a CPU): with seed 7 the mean loss of the last 4 is about 2/3 of that of
    # the first 4 (1.10 -> 0.75; 20 steps went on to 0.52)
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=12, mixed_precision="bf16",
                            fp8_base=True, learning_rate=1e-2, network_dim=8, network_alpha=8.0,
                            network_args=["conv_dim=8", "conv_alpha=8"], **FAST))
    assert run.result.ok, run.result.error
    assert seen["unet"] == {torch.float8_e4m3fn} and seen["te"] == {torch.float8_e4m3fn}
    losses = run.losses
    assert len(losses) == 12
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print(f"fp8_base: mean loss of the first 4 steps {first:.3f} -> last 4 steps {last:.3f}")
    assert last < 0.8 * first
    assert all(t.dtype == torch.float32 for t in run.lora().values())  # the LoRA is never fp8


@pytest.mark.e2e
def test_full_bf16_trains_a_bf16_lora(tmp_path, tiny_model, demo_dataset, monkeypatch):
    dtypes = {}
    build = network_setup.build_network

    def recording_build(session):
        network = build(session)
        dtypes["lora"] = {p.dtype for p in network.parameters()}
        return network

    monkeypatch.setattr(network_setup, "build_network", recording_build)

    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2, mixed_precision="bf16",
                            full_bf16=True, **FAST))
    assert run.result.ok, run.result.error
    assert dtypes["lora"] == {torch.bfloat16}
    assert any(t.abs().max() > 0 for k, t in run.lora().items() if k.endswith("lora_up.weight"))


@pytest.mark.e2e
def test_full_fp16_trains_an_fp16_lora_through_the_grad_scaler(tmp_path, tiny_model, demo_dataset):
    # SGD: torch's AdamW on fp16 weights divides by sqrt(v) + 1e-8, and 1e-8 is 0 in fp16 (NaN)
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2, mixed_precision="fp16",
                            no_half_vae=True, full_fp16=True, optimizer_type="SGD", **FAST))
    assert run.result.ok, run.result.error
    ups = [t for k, t in run.lora().items() if k.endswith("lora_up.weight")]
    assert all(torch.isfinite(t).all() for t in ups) and any(t.abs().max() > 0 for t in ups)
