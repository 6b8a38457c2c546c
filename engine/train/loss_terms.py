"""sd-scripts' loss options: the element-wise loss (`loss_type`, Huber schedules) and the
per-sample SNR-based terms applied after it.

Sources: sd-scripts `library/train_util.py` (`get_huber_threshold_if_needed`,
`conditional_loss`) and `library/custom_train_functions.py` (`get_snr_scale`,
`scale_v_prediction_loss_like_noise_prediction`, `add_v_prediction_like_loss`,
`apply_debiased_estimation`). Huber: "Improving Diffusion Models's Data-Corruption Resistance
using Scheduled Pseudo-Huber Loss" (arXiv 2403.16728). Debiased estimation: arXiv 2310.08442.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

LOSS_TYPES = ("l1", "l2", "huber", "smooth_l1")
HUBER_SCHEDULES = ("constant", "exponential", "snr")
SNR_CAP = 1000.0  # sd-scripts caps SNR here (at t = 0 it is near infinite)


@dataclass(frozen=True)
class LossOptions:
    """The sd-scripts options that shape the loss (names as sd-scripts)."""

    loss_type: str = "l2"
    huber_c: float = 0.1
    huber_scale: float = 1.0
    huber_schedule: str = "snr"
    min_snr_gamma: Optional[float] = None
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: Optional[float] = None
    debiased_estimation_loss: bool = False

    @classmethod
    def from_config(cls, training) -> "LossOptions":
        """From a `TrainingSection` (or anything with the same attribute names)."""
        return cls(**{name: getattr(training, name) for name in cls.__dataclass_fields__})


def snr(noise_scheduler, timesteps):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep, shape `[B]`."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def is_v_prediction(noise_scheduler) -> bool:
    """True when the noise scheduler's config says prediction_type = "v_prediction"."""
    return getattr(noise_scheduler.config, "prediction_type", "epsilon") == "v_prediction"


def min_snr_weights(noise_scheduler, timesteps, gamma: float):
    """Min-SNR-γ (Hang et al. 2023, arXiv 2303.09556): min(SNR, γ) / SNR for epsilon,
    / (SNR + 1) for v-prediction (sd-scripts `apply_snr_weight`), shape `[B]`."""
    import torch

    ratio = snr(noise_scheduler, timesteps)
    clipped = torch.clamp(ratio, max=gamma)
    if is_v_prediction(noise_scheduler):
        return clipped / (ratio + 1.0)
    return clipped / ratio


def huber_threshold(options: LossOptions, timesteps, noise_scheduler):
    """Per-sample Huber `c`, shape `[B]` (None for l1 / l2).

    constant: `huber_c * huber_scale`; exponential: `huber_scale * exp(ln(huber_c) * t / T)`
    (so `huber_scale` at t = 0 and `huber_c * huber_scale` at t = T); snr: with
    `sigma = sqrt((1 - alpha_bar) / alpha_bar)`, `(1 - huber_c) / (1 + sigma)**2 + huber_c`
    (huber_scale is not used there, as in sd-scripts)."""
    import torch

    if options.loss_type not in ("huber", "smooth_l1"):
        return None
    if options.huber_schedule == "exponential":
        rate = -math.log(options.huber_c) / noise_scheduler.config.num_train_timesteps
        return torch.exp(-rate * timesteps.float()) * options.huber_scale
    if options.huber_schedule == "snr":
        alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
        sigmas = ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5
        return (1 - options.huber_c) / (1 + sigmas) ** 2 + options.huber_c
    return torch.full(timesteps.shape, options.huber_c * options.huber_scale, device=timesteps.device)


def elementwise_loss(prediction, target, loss_type: str, huber_c=None):
    """Loss per element (fp32 inputs), shape `[B, C, H, W]`.

    l2: `(p - y)**2`; l1: `|p - y|`; huber: `2c (sqrt((p - y)**2 + c**2) - c)`;
    smooth_l1: `2 (sqrt((p - y)**2 + c**2) - c)`, with `c` per sample (`huber_threshold`)."""
    import torch.nn.functional as F

    if loss_type == "l2":
        return F.mse_loss(prediction, target, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(prediction, target, reduction="none")
    c = huber_c.to(prediction.device, prediction.dtype).view(-1, *([1] * (prediction.ndim - 1)))
    core = (prediction - target) ** 2 + c ** 2
    if loss_type == "huber":
        return 2 * c * (core.sqrt() - c)
    return 2 * (core.sqrt() - c)


def snr_scale(noise_scheduler, timesteps):
    """`SNR / (SNR + 1)` with SNR capped at 1000, shape `[B]`."""
    import torch

    ratio = torch.clamp(snr(noise_scheduler, timesteps), max=SNR_CAP)
    return ratio / (ratio + 1)


def debiased_weights(noise_scheduler, timesteps, v_prediction: bool):
    """`1 / sqrt(SNR)` (epsilon) or `1 / (SNR + 1)` (v-prediction), SNR capped at 1000, shape `[B]`."""
    import torch

    ratio = torch.clamp(snr(noise_scheduler, timesteps), max=SNR_CAP)
    return 1 / (ratio + 1) if v_prediction else 1 / torch.sqrt(ratio)


def post_process(per_sample, options: LossOptions, noise_scheduler, timesteps):
    """sd-scripts' `post_process_loss` order on the per-sample loss `[B]`: min-SNR-γ, then
    scale_v_pred_loss_like_noise_pred (`* scale`), v_pred_like_loss (`+ loss / scale * w`),
    debiased estimation (`* weight`)."""
    if options.min_snr_gamma:
        per_sample = per_sample * min_snr_weights(noise_scheduler, timesteps, options.min_snr_gamma)
    if options.scale_v_pred_loss_like_noise_pred:
        per_sample = per_sample * snr_scale(noise_scheduler, timesteps)
    if options.v_pred_like_loss:
        per_sample = per_sample + per_sample / snr_scale(noise_scheduler, timesteps) * options.v_pred_like_loss
    if options.debiased_estimation_loss:
        per_sample = per_sample * debiased_weights(noise_scheduler, timesteps, is_v_prediction(noise_scheduler))
    return per_sample
