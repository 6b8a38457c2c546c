"""The diffusion training objective: noise, timesteps, target, per-sample weighting.

Randomness comes from torch's global generator (seeded once per run and saved with the
state), so a seeded run draws the same noise and timesteps every time.
"""
from __future__ import annotations


def sample_noise(latents, noise_offset: float = 0.0):
    """Gaussian noise like the latents; with an offset, plus a per-channel constant shift
    (lets the model learn very dark or bright images)."""
    import torch

    noise = torch.randn_like(latents)
    if noise_offset:
        shift = torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device, dtype=latents.dtype)
        noise = noise + noise_offset * shift
    return noise


def sample_timesteps(batch_size: int, num_train_timesteps: int, device):
    import torch

    return torch.randint(0, num_train_timesteps, (batch_size,), device=device).long()


def prediction_type(noise_scheduler) -> str:
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


def snr(noise_scheduler, timesteps):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at each timestep."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return alphas_cumprod / (1.0 - alphas_cumprod)


def min_snr_weights(noise_scheduler, timesteps, gamma: float):
    """Min-SNR-γ (Hang et al. 2023): min(SNR, γ) / SNR for epsilon, / (SNR + 1) for v-prediction."""
    import torch

    ratio = snr(noise_scheduler, timesteps)
    clipped = torch.clamp(ratio, max=gamma)
    if prediction_type(noise_scheduler) == "v_prediction":
        return clipped / (ratio + 1.0)
    return clipped / ratio


def diffusion_loss(model_pred, target, *, timesteps, noise_scheduler, loss_weights=None,
                   min_snr_gamma: float | None = None):
    """Mean squared error per sample (fp32), times per-sample and min-SNR weights, averaged."""
    import torch.nn.functional as F

    per_sample = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if loss_weights is not None:
        per_sample = per_sample * loss_weights.to(per_sample.device, per_sample.dtype)
    if min_snr_gamma:
        per_sample = per_sample * min_snr_weights(noise_scheduler, timesteps, min_snr_gamma)
    return per_sample.mean()
