"""The noise and timestep options against sd-scripts' formulas, on small tensors."""
from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from engine.train.noise import NoiseOptions, noise_and_timesteps, offset_noise, pyramid_noise, sample_timesteps


def _scheduler() -> DDPMScheduler:
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, clip_sample=False)


def test_defaults_draw_exactly_randn_then_randint():
    latents = torch.randn(2, 4, 8, 8)
    sched = _scheduler()
    torch.manual_seed(3)
    noise, noisy, t = noise_and_timesteps(latents, sched, NoiseOptions())
    torch.manual_seed(3)
    expected_noise = torch.randn_like(latents)
    expected_t = torch.randint(0, 1000, (2,))
    assert torch.equal(noise, expected_noise) and torch.equal(t, expected_t)
    assert torch.equal(noisy, sched.add_noise(latents, expected_noise, expected_t))


def test_adaptive_noise_scale_adds_abs_channel_mean():
    latents = torch.zeros(1, 2, 4, 4)
    latents[0, 0] = -2.0  # |mean| 2 on channel 0, 0 on channel 1
    noise = torch.zeros_like(latents)
    torch.manual_seed(0)
    out = offset_noise(latents, noise, 0.1, adaptive_noise_scale=0.5)
    torch.manual_seed(0)
    shift = torch.randn(1, 2, 1, 1)
    assert torch.allclose(out[0, 0], (0.1 + 0.5 * 2.0) * shift[0, 0].expand(4, 4))
    assert torch.allclose(out[0, 1], 0.1 * shift[0, 1].expand(4, 4))
    # a negative scale cannot make the offset negative (clamped at 0)
    torch.manual_seed(0)
    assert torch.equal(offset_noise(latents, noise, 0.1, adaptive_noise_scale=-1.0)[0, 0], torch.zeros(4, 4))


def test_noise_offset_random_strength_scales_by_a_uniform_draw():
    latents = torch.zeros(1, 4, 4, 4)
    torch.manual_seed(5)
    noise, _, _ = noise_and_timesteps(latents, _scheduler(), NoiseOptions(noise_offset=0.5,
                                                                           noise_offset_random_strength=True))
    torch.manual_seed(5)
    base = torch.randn_like(latents)
    strength = torch.rand(1) * 0.5
    shift = torch.randn(1, 4, 1, 1)
    assert torch.allclose(noise, base + strength * shift)


def test_pyramid_noise_matches_the_formula_and_has_unit_std():
    noise = torch.randn(2, 4, 32, 32)
    torch.manual_seed(1)
    out = pyramid_noise(noise.clone(), 3, 0.5)
    torch.manual_seed(1)
    expected = noise.clone()
    up = torch.nn.Upsample(size=(32, 32), mode="bilinear")
    for i in range(3):
        r = float(torch.rand(())) * 2 + 2
        h = max(1, int(32 / r ** i))
        expected = expected + up(torch.randn(2, 4, h, h)) * 0.5 ** i
    expected = expected / expected.std()
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.std().item() == pytest.approx(1.0, abs=1e-5)


def test_timesteps_stay_in_range_and_equal_bounds_give_max():
    torch.manual_seed(0)
    t = sample_timesteps(4000, 1000, "cpu", 200, 300)
    assert t.min() >= 200 and t.max() <= 299 and len(set(t.tolist())) == 100
    assert torch.equal(sample_timesteps(3, 1000, "cpu", 500, 500), torch.full((3,), 500))
    assert sample_timesteps(500, 1000, "cpu", 990, None).min() >= 990


def test_ip_noise_perturbs_the_input_but_not_the_target():
    latents = torch.randn(2, 4, 8, 8)
    sched = _scheduler()
    torch.manual_seed(2)
    noise, noisy, t = noise_and_timesteps(latents, sched, NoiseOptions(ip_noise_gamma=0.1))
    torch.manual_seed(2)
    plain = torch.randn_like(latents)
    tt = torch.randint(0, 1000, (2,))
    extra = torch.randn_like(latents)
    assert torch.equal(noise, plain) and torch.equal(t, tt)
    assert torch.allclose(noisy, sched.add_noise(latents, plain + 0.1 * extra, tt))
    torch.manual_seed(2)
    _, noisy_r, _ = noise_and_timesteps(latents, sched, NoiseOptions(ip_noise_gamma=0.1,
                                                                     ip_noise_gamma_random_strength=True))
    torch.manual_seed(2)
    plain, tt = torch.randn_like(latents), torch.randint(0, 1000, (2,))
    strength = torch.rand(1) * 0.1
    assert torch.allclose(noisy_r, sched.add_noise(latents, plain + strength * torch.randn_like(latents), tt))
