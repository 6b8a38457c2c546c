"""`make_plan` counts, the VRAM estimate's calibration, and the `sdxl-tui plan` command."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from engine.config.schema import RunConfig
from engine.data.batching import DEFAULT_MAX_TRAIN_STEPS
from engine.errors import ConfigError
from engine.plan.run_plan import make_plan
from engine.plan.vram import estimate_vram, unet_lora_params
from sdxl_tui.cli import main


def make_dataset(root: Path, *, flip: bool = False) -> Path:
    """10 training images (6 square, 4 wide) × 2 repeats, 3 reg images; batch size from the run config."""
    for n in range(10):
        size = (256, 256) if n < 6 else (384, 256)
        (root / "train").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(root / "train" / f"t{n}.png")
        if n % 2 == 0:
            (root / "train" / f"t{n}.caption").write_text(f"photo {n}")
    for n in range(3):
        (root / "reg").mkdir(exist_ok=True)
        Image.new("RGB", (256, 256)).save(root / "reg" / f"r{n}.png")
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "dataset.toml").write_text(
        '[general]\nenable_bucket = true\nmin_bucket_reso = 128\nmax_bucket_reso = 512\n'
        f'flip_aug = {"true" if flip else "false"}\n'
        '[[datasets]]\nresolution = 256\n'
        '[[datasets.subsets]]\nimage_dir = "../train"\nnum_repeats = 2\nclass_tokens = "sks"\n'
        '[[datasets.subsets]]\nimage_dir = "../reg"\nis_reg = true\nclass_tokens = "person"\n')
    return root / "data" / "dataset.toml"


def run_config(**values) -> RunConfig:
    return RunConfig().with_values(dataset_config="data/dataset.toml",
                                   pretrained_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0", **values)


def test_counts_buckets_batches_and_steps(tmp_path):
    make_dataset(tmp_path)
    plan = make_plan(run_config(train_batch_size=2, max_train_epochs=3), base_dir=tmp_path)
    assert plan.scanned.num_train_images == 20 and plan.scanned.num_reg_images == 20
    hist = {b.bucket: b.images for b in plan.buckets}
    assert hist == {(256, 256): 12 + 20, (320, 192): 8}  # 384x256 (1.5) -> nearest bucket 320x192 (1.67)
    assert plan.batches_per_epoch == 16 + 4
    assert plan.steps_per_epoch == 20 and plan.epochs == 3 and plan.total_steps == 60
    assert plan.limited_by == "max_train_epochs"
    train = plan.subsets[0]
    assert (train.images, train.missing_captions, train.unreadable) == (10, 5, 0)
    assert plan.ok


def test_gradient_accumulation_and_world_size(tmp_path):
    make_dataset(tmp_path)
    plan = make_plan(run_config(train_batch_size=2, gradient_accumulation_steps=3, max_train_epochs=2),
                     base_dir=tmp_path, world_size=2)
    assert plan.batches_per_epoch == 10 and plan.steps_per_epoch == math.ceil(10 / 3) == 4
    assert plan.total_steps == 8


def test_step_limit_wins_and_default_is_1600(tmp_path):
    make_dataset(tmp_path)
    both = make_plan(run_config(max_train_steps=50, max_train_epochs=99), base_dir=tmp_path)
    assert (both.limited_by, both.total_steps) == ("max_train_steps", 50)
    assert both.steps_per_epoch == 40 and both.epochs == 2
    neither = make_plan(run_config(), base_dir=tmp_path)
    assert (neither.limited_by, neither.total_steps) == ("default", DEFAULT_MAX_TRAIN_STEPS)
    assert neither.epochs == math.ceil(1600 / 40)


def test_cache_sizes(tmp_path):
    make_dataset(tmp_path, flip=True)
    plan = make_plan(run_config(), base_dir=tmp_path)
    square = 4 * 32 * 32 * 4
    wide = 4 * 24 * 40 * 4
    assert plan.latent_cache_bytes == 2 * (9 * square + 4 * wide)  # flip_aug caches both
    assert plan.text_cache_bytes == 13 * (77 * 2048 + 1280) * 4


def test_problems_are_collected_not_raised(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "train" / "t1.png").write_bytes(b"broken")
    plan = make_plan(run_config(), base_dir=tmp_path)
    assert not plan.ok and any("t1.png" in p for p in plan.problems)
    assert plan.subsets[0].unreadable == 1
    skipped = make_plan(run_config(skip_bad_images=True), base_dir=tmp_path)
    assert skipped.ok and skipped.scanned.skipped == 1


def test_missing_dataset_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="dataset_config is empty"):
        make_plan(RunConfig())
    with pytest.raises(ConfigError, match="not found"):
        make_plan(run_config(), base_dir=tmp_path)


def test_lora_parameter_count_matches_sdxl_module_shapes():
    # 722 modules; rank 8 with fp32 AdamW state (16 bytes/param) ≈ 0.34 GB, rank 32 ≈ 1.36 GB (facts file)
    assert unet_lora_params(8) * 16 / 1e9 == pytest.approx(0.34, abs=0.01)
    assert unet_lora_params(32) * 16 / 1e9 == pytest.approx(1.36, abs=0.01)
    assert unet_lora_params(8, conv_dim=8) > unet_lora_params(8)


def test_vram_calibration_1024_bf16_checkpointing_rank16_cached():
    cfg = RunConfig().with_values(mixed_precision="bf16", gradient_checkpointing=True, network_dim=16,
                                  optimizer_type="AdamW", cache_latents=True, cache_text_encoder_outputs=True,
                                  network_train_unet_only=True)
    v = estimate_vram(cfg, None)  # no plan: 1024², batch 1
    assert v.unet_weights == pytest.approx(5.13, abs=0.01)
    assert 7.0 <= v.total <= 8.0
    assert v.text_encoders == 0 and v.vae == 0
    full = estimate_vram(cfg.with_values(gradient_checkpointing=False), None)
    assert full.activations - v.activations > 4.5
    uncached = estimate_vram(cfg.with_values(cache_text_encoder_outputs=False, cache_latents=False), None)
    assert uncached.text_encoders > 1.5 and uncached.vae > 0.1


def test_vram_uses_largest_bucket_times_batch(tmp_path):
    make_dataset(tmp_path)
    plan = make_plan(run_config(train_batch_size=4), base_dir=tmp_path)
    assert plan.vram.resolution == (256, 256) and plan.vram.batch_size == 4


def write_run_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "run.toml"
    path.write_text('[model]\npretrained_model_name_or_path = "stabilityai/stable-diffusion-xl-base-1.0"\n'
                    f'[dataset]\ndataset_config = "data/dataset.toml"\n{extra}\n'
                    '[training]\ntrain_batch_size = 2\nmax_train_epochs = 3\n')
    return path


def test_cli_plan_prints_and_exits_zero(tmp_path, capsys):
    make_dataset(tmp_path)
    assert main(["plan", str(write_run_config(tmp_path)), "--set", "train_batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "256x256" in out and "max_train_epochs" in out and "VRAM estimate" in out
    assert "batch size 4 (from run config)" in out


def test_cli_plan_exit_codes(tmp_path, capsys):
    make_dataset(tmp_path)
    (tmp_path / "train" / "t3.png").write_bytes(b"broken")
    assert main(["plan", str(write_run_config(tmp_path))]) == 65
    err = capsys.readouterr().err
    assert "t3.png" in err
    assert main(["plan", str(write_run_config(tmp_path, "bogus_key = 1"))]) == 78
    assert main(["plan", str(tmp_path / "missing.toml")]) == 78


def test_plan_shows_the_warm_up_length_in_steps(tmp_path):
    make_dataset(tmp_path)
    count = make_plan(run_config(max_train_steps=50, lr_scheduler="cosine", lr_warmup_steps=5), base_dir=tmp_path)
    assert "Schedule: cosine, warm-up 5 of 50 steps" in count.lines()
    ratio = make_plan(run_config(max_train_steps=50, lr_scheduler="linear", lr_warmup_steps=0.1), base_dir=tmp_path)
    assert "Schedule: linear, warm-up 5 of 50 steps (0.1 of the run)" in ratio.lines()
    free = make_plan(run_config(max_train_steps=50, optimizer_type="SGDScheduleFree"), base_dir=tmp_path)
    assert "Schedule: none (SGDScheduleFree replaces it)" in free.lines()
