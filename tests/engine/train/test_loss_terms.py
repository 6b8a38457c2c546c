"""loss_type / Huber schedules and the SNR loss terms against sd-scripts' formulas."""
from __future__ import annotations

import math

import pytest
import torch
from diffusers import DDPMScheduler

from engine.train.loss import diffusion_loss
from engine.train.loss_terms import (
    LossOptions,
    debiased_weights,
    elementwise_loss,
    huber_threshold,
    post_process,
    snr,
    snr_scale,
)


def _scheduler(kind: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, prediction_type=kind)


def test_elementwise_losses_on_known_values():
    p = torch.tensor([3.0, 0.0]).view(2, 1, 1, 1)
    y = torch.zeros_like(p)
    c = torch.tensor([0.5, 0.5])
    assert elementwise_loss(p, y, "l2").flatten().tolist() == [9.0, 0.0]
    assert elementwise_loss(p, y, "l1").flatten().tolist() == [3.0, 0.0]
    huber = 2 * 0.5 * (math.sqrt(9 + 0.25) - 0.5)
    assert elementwise_loss(p, y, "huber", c).flatten().tolist() == pytest.approx([huber, 0.0])
    assert elementwise_loss(p, y, "smooth_l1", c).flatten().tolist() == pytest.approx([huber / 0.5, 0.0])


def test_huber_schedules():
    sched, t = _scheduler(), torch.tensor([0, 500, 1000 - 1])
    const = huber_threshold(LossOptions(loss_type="huber", huber_schedule="constant", huber_c=0.2, huber_scale=2.0),
                            t, sched)
    assert const.tolist() == pytest.approx([0.4] * 3)
    expo = huber_threshold(LossOptions(loss_type="huber", huber_schedule="exponential", huber_c=0.2,
                                       huber_scale=2.0), t, sched)
    assert expo.tolist() == pytest.approx([2.0 * 0.2 ** (s / 1000) for s in (0, 500, 999)], rel=1e-5)
    snr_c = huber_threshold(LossOptions(loss_type="smooth_l1", huber_c=0.1), t, sched)
    a = sched.alphas_cumprod[t]
    sigma = ((1 - a) / a).sqrt()
    assert snr_c.tolist() == pytest.approx(((1 - 0.1) / (1 + sigma) ** 2 + 0.1).tolist(), rel=1e-5)
    assert huber_threshold(LossOptions(loss_type="l1"), t, sched) is None


def test_snr_terms():
    sched, t = _scheduler(), torch.tensor([0, 10, 900])
    ratio = torch.clamp(snr(sched, t), max=1000)
    assert snr_scale(sched, t).tolist() == pytest.approx((ratio / (ratio + 1)).tolist(), rel=1e-6)
    assert debiased_weights(sched, t, False).tolist() == pytest.approx((1 / ratio.sqrt()).tolist(), rel=1e-6)
    assert debiased_weights(sched, t, True).tolist() == pytest.approx((1 / (ratio + 1)).tolist(), rel=1e-6)
    loss = torch.tensor([1.0, 2.0, 3.0])
    scale = ratio / (ratio + 1)
    assert post_process(loss, LossOptions(scale_v_pred_loss_like_noise_pred=True), sched, t).tolist() == \
        pytest.approx((loss * scale).tolist(), rel=1e-6)
    assert post_process(loss, LossOptions(v_pred_like_loss=0.5), sched, t).tolist() == \
        pytest.approx((loss + loss / scale * 0.5).tolist(), rel=1e-6)
    v = _scheduler("v_prediction")
    assert post_process(loss, LossOptions(debiased_estimation_loss=True), v, t).tolist() == \
        pytest.approx((loss / (ratio + 1)).tolist(), rel=1e-6)
    assert torch.equal(post_process(loss, LossOptions(), sched, t), loss)


def test_diffusion_loss_defaults_unchanged_and_loss_type_applies():
    torch.manual_seed(0)
    pred, target, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([5, 500])
    sched = _scheduler()
    plain = diffusion_loss(pred, target, timesteps=t, noise_scheduler=sched)
    assert plain == torch.nn.functional.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3)).mean()
    l1 = diffusion_loss(pred, target, timesteps=t, noise_scheduler=sched, options=LossOptions(loss_type="l1"))
    assert l1.item() == pytest.approx((pred - target).abs().mean().item(), rel=1e-6)
