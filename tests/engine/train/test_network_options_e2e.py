"""Whole tiny-model trainings with issue 13's networks.lora options: the run trains (loss falls),
the file loads back, and each option shows in what was trained or reported. EMA: the saved
file holds the average, the state the raw weights, and a resume is bit-identical."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from small_dataset import small_dataset
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import RunStarted, Step


def _falls(losses: list[float]) -> tuple[float, float]:
    quarter = max(1, len(losses) // 4)
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    assert last < first, (first, last)
    return first, last


# the options below act on the UNet's modules; the text encoders add time, not coverage
FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)
BLOCK_DIMS = ",".join(["4"] * 5 + ["2"] * 5 + ["0", "4", "0"] + ["4"] * 10)  # middle_block 0 and 2 off


@pytest.mark.e2e
def test_lora_options_train_and_show_their_effect(tmp_path, tiny_model, demo_dataset):
    from engine.lora.block_weights import block_index
    from engine.lora.file import load_lora

    # one image at batch 1: every step sees it, so the loss falls within a few steps (the overfit recipe)
    one_image = small_dataset(tmp_path / "data", demo_dataset)
    cfg = tiny_config(tmp_path, tiny_model, one_image, max_train_steps=20, learning_rate=1e-2,
                      network_args=[f"block_dims={BLOCK_DIMS}", "rank_dropout=0.1", "module_dropout=0.1",
                                    "loraplus_lr_ratio=4", "up_lr_weight=zeros+0.5"],
                      scale_weight_norms=1.0, **FAST)
    run = train(cfg)
    assert run.result.ok, run.result.error
    print("lora options: loss %.4f -> %.4f" % _falls(run.losses))
    tensors, metadata = load_lora(run.result.lora_path)
    downs = {k: v for k, v in tensors.items() if k.startswith("lora_unet") and k.endswith("lora_down.weight")}
    for key, value in downs.items():
        assert value.shape[0] == int(BLOCK_DIMS.split(",")[block_index(key.split(".")[0])])
    step = run.of(Step)[-1]
    assert step.keys_scaled is not None and step.mean_norm > 0 and step.max_norm <= 1.0 + 1e-4
    assert step.lr["unet_block13 plus"] == pytest.approx(4 * step.lr["unet_block13"])
    assert step.lr["unet_block13"] == pytest.approx(0.5 * step.lr["unet_block5"])
    assert '"loraplus_lr_ratio": "4"' in metadata["ss_network_args"]


@pytest.mark.e2e
def test_text_encoder_only_with_base_weights_and_dim_from_weights(tmp_path, tiny_model, demo_dataset):
    first = train(tiny_config(tmp_path / "a", tiny_model, demo_dataset, max_train_steps=2, network_dim=2,
                              network_alpha=1.0, network_train_text_encoder_only=True))
    assert first.result.ok, first.result.error
    # (what is shown is which modules train and at what rank: two steps show it as well as sixteen)
    cfg = tiny_config(tmp_path / "b", tiny_model, demo_dataset, max_train_steps=2, learning_rate=1e-2,
                      network_train_text_encoder_only=True, network_weights=first.result.lora_path,
                      dim_from_weights=True, network_dim=8, base_weights=[first.result.lora_path],
                      base_weights_multiplier=[0.5])
    run = train(cfg)
    assert run.result.ok, run.result.error
    tensors = run.lora()
    assert tensors and all(k.startswith("lora_te") for k in tensors)  # no UNet module
    assert {v.shape[0] for k, v in tensors.items() if k.endswith("lora_down.weight")} == {2}  # rank from the file
    assert set(run.of(Step)[-1].lr) == {"te1", "te2"}


@pytest.mark.e2e
def test_ema_saves_the_average_and_resumes_bit_identically(tmp_path, tiny_model, demo_dataset):
    # averages at steps 2 and 4; the state saved at step 3 (the save a stop there makes) is mid-interval,
    # so the resumed run must carry the average and the count since the last update to match at step 4
    options = dict(max_train_steps=4, learning_rate=1e-2, ema_decay=0.8, ema_update_every=2, save_state=True,
                   **FAST)
    cfg = tiny_config(tmp_path / "whole", tiny_model, demo_dataset, save_every_n_steps=3, **options)
    whole = train(cfg)
    assert whole.result.ok, whole.result.error
    plain = train(tiny_config(tmp_path / "plain", tiny_model, demo_dataset, **{**options, "ema_decay": None}))
    assert whole.losses == plain.losses  # EMA never touches the trained weights
    saved, raw = whole.lora(), plain.lora()
    assert any(not torch.equal(saved[k], raw[k]) for k in saved if k.endswith("weight"))
    state = Path(whole.result.output_dir) / "state"
    from safetensors.torch import load_file

    newest = sorted(state.glob("step-*"))[-1]
    assert newest.name == "step-00000004"
    assert all(torch.equal(v, raw[k]) for k, v in load_file(str(newest / "lora.safetensors")).items())
    assert (newest / "ema.safetensors").is_file()

    shutil.rmtree(newest)  # the state of step 3 is now the newest
    resumed = train(cfg, resume=True)
    assert resumed.result.ok, resumed.result.error
    assert resumed.of(RunStarted)[0].resumed_from_step == 3
    assert whole.losses[:3] + resumed.losses == whole.losses
    final = resumed.lora()
    assert all(torch.equal(final[k], saved[k]) for k in saved)
