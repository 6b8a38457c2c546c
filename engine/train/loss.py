"""The diffusion training objective: target and loss (noise and timesteps: engine/train/noise.py).

Randomness comes from torch's global generator (seeded once per run and saved with the
state), so a seeded run draws the same noise and timesteps every time.
"""
from __future__ import annotations

from engine.train.loss_terms import (  # noqa: F401  (snr, min_snr_weights: part of this module's API)
    LossOptions,
    elementwise_loss,
    huber_threshold,
    min_snr_weights,
    post_process,
    snr,
)
from engine.train.noise import sample_timesteps  # noqa: F401


def prediction_type(noise_scheduler) -> str:
    """The noise scheduler's `config.prediction_type` ("epsilon" when it has none)."""
    return str(getattr(noise_scheduler.config, "prediction_type", "epsilon"))


def training_target(noise_scheduler, latents, noise, timesteps):
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction)."""
    kind = prediction_type(noise_scheduler)
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return noise_scheduler.get_velocity(latents, noise, timesteps)
    from engine.errors import ModelError

    raise ModelError(f"scheduler prediction_type '{kind}' is not supported",
                     hint="SDXL models use epsilon or v_prediction in scheduler/scheduler_config.json")


def diffusion_loss(model_pred, target, *, timesteps, noise_scheduler, loss_weights=None,
                   min_snr_gamma: float | None = None, options: LossOptions | None = None):
    """The batch loss (fp32): the element-wise loss (`options.loss_type`, l2 by default), mean
    over `[C, H, W]` per sample, times the per-sample `loss_weights` `[B]`, then sd-scripts'
    SNR terms (`loss_terms.post_process`), averaged (sd-scripts `train_network.py: process_batch`).
    `min_snr_gamma` is a shortcut for `options.min_snr_gamma`."""
    if options is None:
        options = LossOptions(min_snr_gamma=min_snr_gamma)
    huber_c = huber_threshold(options, timesteps, noise_scheduler)
    per_element = elementwise_loss(model_pred.float(), target.float(), options.loss_type, huber_c)
    per_sample = per_element.mean(dim=(1, 2, 3))
    if loss_weights is not None:
        per_sample = per_sample * loss_weights.to(per_sample.device, per_sample.dtype)
    return post_process(per_sample, options, noise_scheduler, timesteps).mean()
