"""The noise added to the latents, and the timesteps it is added at.

Formulas follow sd-scripts (`library/train_util.py: get_noise_noisy_latents_and_timesteps`,
`library/custom_train_functions.py: apply_noise_offset, pyramid_noise_like`). Random draws come
from torch's global generators (seeded once per run, saved with the state). With every option at
its default the draws are exactly `randn_like(latents)` then `randint(0, T, (B,))`, so a default
run is bit-identical to one made before these options existed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class NoiseOptions:
    """The sd-scripts options that shape the noise and timesteps (names as sd-scripts)."""

    noise_offset: float = 0.0
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: Optional[float] = None
    multires_noise_iterations: int = 0
    multires_noise_discount: float = 0.3
    ip_noise_gamma: Optional[float] = None
    ip_noise_gamma_random_strength: bool = False
    min_timestep: Optional[int] = None
    max_timestep: Optional[int] = None

    @classmethod
    def from_config(cls, training) -> "NoiseOptions":
        """From a `TrainingSection` (or anything with the same attribute names)."""
        return cls(**{name: getattr(training, name) for name in cls.__dataclass_fields__})


def offset_noise(latents, noise, noise_offset, adaptive_noise_scale: Optional[float] = None):
    """Offset noise (crosslabs.org/blog/diffusion-with-offset-noise): `noise + s * n`, one
    `n ~ N(0, 1)` per (sample, channel), shape `[B, C, 1, 1]`.

    `s` is `noise_offset` (a float or a 1-element tensor); with `adaptive_noise_scale` it is
    `max(0, noise_offset + adaptive_noise_scale * |mean_hw(latents)|)` per (sample, channel)
    (sd-scripts `apply_noise_offset`). latents, noise: `[B, 4, H/8, W/8]`.
    """
    import torch

    strength = noise_offset
    if adaptive_noise_scale is not None:
        latent_mean = latents.mean(dim=(2, 3), keepdim=True).abs()
        strength = torch.clamp(noise_offset + adaptive_noise_scale * latent_mean, min=0.0)
    shift = torch.randn(latents.shape[0], latents.shape[1], 1, 1, device=latents.device, dtype=latents.dtype)
    return noise + strength * shift


def pyramid_noise(noise, iterations: int, discount: float):
    """Multi-resolution ("pyramid") noise (sd-scripts `pyramid_noise_like`, after
    wandb.ai/johnowhitaker/multires_noise): for i in 0..iterations-1, with a random ratio
    `r ~ U[2, 4)`, add `discount**i * upsample(N(0, 1) at size / r**i)` (bilinear), stopping once
    a side reaches 1; then divide by the std of the whole tensor. noise: `[B, C, H, W]`."""
    import torch

    b, c, height, width = noise.shape
    upsample = torch.nn.Upsample(size=(height, width), mode="bilinear")
    for i in range(iterations):
        r = float(torch.rand(())) * 2 + 2  # CPU generator: no device sync
        hn, wn = max(1, int(height / (r ** i))), max(1, int(width / (r ** i)))
        low = torch.randn(b, c, hn, wn, device=noise.device, dtype=noise.dtype)
        noise = noise + upsample(low) * discount ** i
        if hn == 1 or wn == 1:
            break
    return noise / noise.std()


def sample_timesteps(batch_size: int, num_train_timesteps: int, device, min_timestep: Optional[int] = None,
                     max_timestep: Optional[int] = None):
    """Uniform integer timesteps in `[min_timestep, max_timestep)` (defaults 0 and T), shape `[B]`;
    when min >= max, every timestep is `max_timestep` (sd-scripts `get_timesteps`)."""
    import torch

    low = 0 if min_timestep is None else min_timestep
    high = num_train_timesteps if max_timestep is None else max_timestep
    if low < high:
        return torch.randint(low, high, (batch_size,), device=device).long()
    return torch.full((batch_size,), high, device=device, dtype=torch.long)


def noise_and_timesteps(latents, noise_scheduler, options: NoiseOptions, timesteps=None):
    """(noise, noisy latents, timesteps) for one batch, in sd-scripts' order of draws; given
    `timesteps` (`[B]` long, the validation loss's fixed ones) are used instead of drawn ones.

    `noise` is the training target's noise (offset / pyramid applied); the noisy latents may
    carry extra input-perturbation noise (`ip_noise_gamma`, arXiv 2301.11706) that the target
    does not: `add_noise(latents, noise + g * N(0, 1), t)`. Shapes: `[B, 4, H/8, W/8]`, `[B]`."""
    import torch

    noise = torch.randn_like(latents)
    if options.noise_offset:
        offset = options.noise_offset
        if options.noise_offset_random_strength:
            offset = torch.rand(1, device=latents.device) * options.noise_offset
        noise = offset_noise(latents, noise, offset, options.adaptive_noise_scale)
    if options.multires_noise_iterations:
        noise = pyramid_noise(noise, options.multires_noise_iterations, options.multires_noise_discount)
    if timesteps is None:
        timesteps = sample_timesteps(latents.shape[0], noise_scheduler.config.num_train_timesteps, latents.device,
                                     options.min_timestep, options.max_timestep)
    noised_with = noise
    if options.ip_noise_gamma:
        strength = options.ip_noise_gamma
        if options.ip_noise_gamma_random_strength:
            strength = torch.rand(1, device=latents.device) * options.ip_noise_gamma
        noised_with = noise + strength * torch.randn_like(latents)
    return noise, noise_scheduler.add_noise(latents, noised_with, timesteps), timesteps
