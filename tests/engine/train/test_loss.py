"""Noise, timesteps, the epsilon / v-prediction target and min-SNR-γ weighting."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from engine.train.loss import diffusion_loss, min_snr_weights, snr, training_target
from engine.train.noise import offset_noise


def _scheduler(kind: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, prediction_type=kind)


def test_noise_offset_shifts_each_channel():
    torch.manual_seed(0)
    latents = torch.zeros(2, 4, 16, 16)
    plain = torch.randn_like(latents)
    offset = offset_noise(latents, plain, 0.5)
    shift = offset - plain
    assert not torch.allclose(shift, torch.zeros_like(shift))
    # one constant per (sample, channel); (plain + c) - plain rounds c by up to ~1 ulp of |plain| (~5e-7),
    # which a relative tolerance misses when c itself is small
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift), rtol=0, atol=1e-5)


def test_target_is_noise_for_epsilon_and_velocity_for_v():
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([10, 900])
    assert torch.equal(training_target(_scheduler("epsilon"), latents, noise, t), noise)
    v_sched = _scheduler("v_prediction")
    v = training_target(v_sched, latents, noise, t)
    a = v_sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - v_sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(v, a * noise - s * latents, atol=1e-6)


def test_min_snr_weights_clip_high_snr_only():
    sched = _scheduler()
    t = torch.tensor([1, 999])
    ratio = snr(sched, t)
    assert ratio[0] > 5 > ratio[1]
    w = min_snr_weights(sched, t, 5.0)
    assert w[0] == pytest.approx(5.0 / ratio[0].item(), rel=1e-5)
    assert w[1] == pytest.approx(1.0)
    wv = min_snr_weights(_scheduler("v_prediction"), t, 5.0)
    assert wv[1] == pytest.approx(ratio[1].item() / (ratio[1].item() + 1), rel=1e-5)


def test_loss_weights_and_min_snr_change_the_loss():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = torch.tensor([5, 500])
    sched = _scheduler()
    base = diffusion_loss(pred, target, timesteps=t, noise_scheduler=sched)
    assert base == pytest.approx(torch.nn.functional.mse_loss(pred, target).item(), rel=1e-6)
    weighted = diffusion_loss(pred, target, timesteps=t, noise_scheduler=sched, loss_weights=torch.tensor([1.0, 0.0]))
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    assert weighted == pytest.approx(per_sample[0].item() / 2, rel=1e-6)
    snr_loss = diffusion_loss(pred, target, timesteps=t, noise_scheduler=sched, min_snr_gamma=5.0)
    assert snr_loss < base
