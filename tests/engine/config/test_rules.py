"""Each cross-option rule fires when it should, and its fix resolves it."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine.config.rules import ERROR, WARNING, apply_fixes, check_rules, raise_for_errors
from engine.config.schema import RunConfig
from engine.errors import ConfigError

BASE = RunConfig().with_values(pretrained_model_name_or_path="m", dataset_config="d.toml")


@dataclass
class FakeSubset:  # the attribute names engine/data/dataset_config.py resolves
    shuffle_caption: bool = False
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    token_warmup_step: int = 0
    color_aug: bool = False
    random_crop: bool = False
    flip_aug: bool = False


@dataclass
class FakeDataset:
    resolution: object = 1024
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 2048
    bucket_reso_steps: int = 64
    subsets: list = field(default_factory=lambda: [FakeSubset()])


@dataclass
class FakeDatasetConfig:
    datasets: list = field(default_factory=lambda: [FakeDataset()])

    def all_subsets(self):
        return [s for d in self.datasets for s in d.subsets]


def keys_of(issues, level=None):
    return {key for issue in issues if level in (None, issue.level) for key in issue.keys}


def test_clean_config_has_no_issues():
    assert check_rules(BASE, FakeDatasetConfig()) == []


def test_cache_text_encoder_outputs_needs_unet_only_and_fix_applies():
    cfg = BASE.with_values(cache_text_encoder_outputs=True)
    issues = check_rules(cfg)
    assert "network_train_unet_only" in keys_of(issues, ERROR)
    fixed = apply_fixes(cfg, issues)
    assert fixed.network.network_train_unet_only and check_rules(fixed) == []


@pytest.mark.parametrize("key,value", [("shuffle_caption", True), ("caption_dropout_rate", 0.1),
                                       ("caption_tag_dropout_rate", 0.1), ("token_warmup_step", 5)])
def test_cache_text_encoder_outputs_refuses_caption_augmentation(key, value):
    cfg = BASE.with_values(cache_text_encoder_outputs=True, network_train_unet_only=True)
    ds = FakeDatasetConfig()
    setattr(ds.datasets[0].subsets[0], key, value)
    assert key in keys_of(check_rules(cfg, ds), ERROR)
    assert check_rules(cfg, FakeDatasetConfig()) == []


@pytest.mark.parametrize("key", ["color_aug", "random_crop"])
def test_cache_latents_refuses_image_augmentation(key):
    ds = FakeDatasetConfig()
    setattr(ds.datasets[0].subsets[0], key, True)
    assert key in keys_of(check_rules(BASE.with_values(cache_latents=True), ds), ERROR)
    assert check_rules(BASE.with_values(cache_latents=False), ds) == []


def test_cache_latents_allows_flip_aug():
    ds = FakeDatasetConfig()
    ds.datasets[0].subsets[0].flip_aug = True
    assert check_rules(BASE.with_values(cache_latents=True), ds) == []


def test_fused_backward_pass_needs_accumulation_one_and_supported_optimizer():
    issues = check_rules(BASE.with_values(fused_backward_pass=True, gradient_accumulation_steps=4, max_grad_norm=0))
    assert "gradient_accumulation_steps" in keys_of(issues, ERROR)
    issues = check_rules(BASE.with_values(fused_backward_pass=True, optimizer_type="Prodigy", max_grad_norm=0))
    assert "optimizer_type" in keys_of(issues, ERROR)
    assert check_rules(BASE.with_values(fused_backward_pass=True, max_grad_norm=0)) == []


def test_fp16_without_no_half_vae_warns():
    issues = check_rules(BASE.with_values(mixed_precision="fp16"))
    assert [i.level for i in issues] == [WARNING] and "no_half_vae" in issues[0].message
    assert check_rules(BASE.with_values(mixed_precision="fp16", no_half_vae=True)) == []


def test_bucket_steps_must_be_multiple_of_32():
    ds = FakeDatasetConfig()
    ds.datasets[0].bucket_reso_steps = 48
    assert "bucket_reso_steps" in keys_of(check_rules(BASE, ds), ERROR)
    ds.datasets[0].bucket_reso_steps = 32
    assert check_rules(BASE, ds) == []


def test_resolution_must_lie_in_bucket_range():
    ds = FakeDatasetConfig()
    ds.datasets[0].resolution = [1024, 1024]
    ds.datasets[0].max_bucket_reso = 768
    assert "resolution" in keys_of(check_rules(BASE, ds), ERROR)


def test_v2_is_rejected_v_parameterization_accepted_and_clip_skip_warned():
    issues = check_rules(BASE.with_values(v2=True, v_parameterization=True, clip_skip=2))
    assert "v2" in keys_of(issues, ERROR) and "v_parameterization" not in keys_of(issues, ERROR)
    assert "clip_skip" in keys_of(issues, WARNING)


def test_missing_model_and_dataset_are_errors():
    issues = check_rules(RunConfig())
    assert {"pretrained_model_name_or_path", "dataset_config"} <= keys_of(issues, ERROR)
    with pytest.raises(ConfigError, match="no base model"):
        raise_for_errors(issues)


def test_sampling_without_prompts_and_warmup_with_constant():
    issues = check_rules(BASE.with_values(sample_every_n_steps=10, lr_warmup_steps=100))
    assert "sample_prompts" in keys_of(issues, ERROR)
    assert "lr_warmup_steps" in keys_of(issues, ERROR)  # sd-scripts refuses a warm-up with constant
    assert apply_fixes(BASE.with_values(lr_warmup_steps=100), issues).optimizer.lr_scheduler == "constant_with_warmup"


def test_sampling_on_both_schedules_warns_that_only_epochs_count():
    issues = check_rules(BASE.with_values(sample_prompts="p.txt", sample_every_n_steps=5, sample_every_n_epochs=1))
    assert {"sample_every_n_steps", "sample_every_n_epochs"} <= keys_of(issues, WARNING)


@pytest.mark.parametrize("values, key, level", [
    (dict(adaptive_noise_scale=0.01), "adaptive_noise_scale", ERROR),
    (dict(adaptive_noise_scale=0.01, noise_offset=0.05), None, None),
    (dict(scale_v_pred_loss_like_noise_pred=True), "scale_v_pred_loss_like_noise_pred", ERROR),
    (dict(scale_v_pred_loss_like_noise_pred=True, v_parameterization=True), None, None),
    (dict(v_pred_like_loss=0.1, v_parameterization=True), "v_pred_like_loss", ERROR),
    (dict(v_pred_like_loss=0.1), None, None),
    (dict(zero_terminal_snr=True), "zero_terminal_snr", WARNING),
    (dict(zero_terminal_snr=True, v_parameterization=True), None, None),
    (dict(min_timestep=500, max_timestep=100), "min_timestep", ERROR),
    (dict(min_timestep=500, max_timestep=500), None, None),
    (dict(min_timestep=999), None, None),
    (dict(huber_c=0.2), "huber_c", WARNING),
    (dict(huber_c=0.2, loss_type="huber"), None, None),
    (dict(multires_noise_discount=0.5), "multires_noise_discount", WARNING),
    (dict(noise_offset_random_strength=True), "noise_offset_random_strength", WARNING),
    (dict(ip_noise_gamma_random_strength=True), "ip_noise_gamma_random_strength", WARNING),
])
def test_noise_and_loss_option_rules(values, key, level):
    issues = check_rules(BASE.with_values(**values))
    if key is None:
        assert not [i for i in issues if set(i.keys) & set(values)]
    else:
        assert key in keys_of(issues, level)


def test_unknown_network_arg_warns():
    issues = check_rules(BASE.with_values(network_args=["conv_dim=4", "convdim=8"]))
    assert any("convdim" in issue.message for issue in issues)
