"""The base model of a run: loaded frozen into the compute dtype, and, when the UNet is the only
part training needs, loaded in two halves around the caches.

Why two halves: with `cache_text_encoder_outputs` and `network_train_unet_only`, the text
encoders are used once, to fill the cache. Loading the UNet only after that, with the encoders
(and a VAE whose latents are cached) already let go, keeps them from ever sharing memory with
it: for SDXL in fp32 that is 9.6 GiB (UNet) instead of 9.6 + 3.1 GiB (text encoders) + 0.3 GiB
(VAE) at the load peak and in every step (issue 17). The text outputs are the same either way:
in this case no adapter or merge touches the encoders, which `unet_loads_after_caching` checks.
"""
from __future__ import annotations

import time
from typing import Any

from engine.events.types import LOADING_MODEL, Phase


def weight_dtype(mixed_precision: str):
    """The frozen weights' dtype for `mixed_precision` ("no", "fp16", "bf16")."""
    import torch

    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


def unet_loads_after_caching(cfg: Any) -> bool:
    """True when the text encoders serve only the text-output cache: outputs cached, no encoder
    trained, nothing merged into them (`base_weights`) and their weights not stored in fp8 (both
    happen when the network is built, which needs the UNet)."""
    from engine.train.precision import fp8_parts

    caching = cfg.caching
    return ((caching.cache_text_encoder_outputs or caching.cache_text_encoder_outputs_to_disk)
            and cfg.network.network_train_unet_only and not cfg.network.base_weights
            and "text_encoder1" not in fp8_parts(cfg))


def load_model(session: Any, *, with_unet: bool = True):
    """The base model, frozen, on the device in the compute dtype (VAE fp32 with no_half_vae);
    `with_unet=False` leaves `unet` None for `load_late_unet`. Raises ModelError."""
    import torch

    from engine.model.load import load_sdxl
    from engine.model.parts import loading_progress

    cfg, device = session.cfg, session.accelerator.device
    session.emit(Phase(time=time.time(), name=LOADING_MODEL, detail=cfg.model.pretrained_model_name_or_path))
    dtype = session.weight_dtype = weight_dtype(cfg.precision.mixed_precision)
    model = load_sdxl(cfg.model, loading_progress(session.emit, before=session.chatter.reroute), dtype=dtype,
                      with_unet=with_unet)
    model.max_token_length = cfg.training.max_token_length
    model.weighted_captions = cfg.training.weighted_captions
    for part in (model.unet, model.text_encoder1, model.text_encoder2):
        _freeze_and_place(part, device, dtype)
    _freeze_and_place(model.vae, device, torch.float32 if cfg.precision.no_half_vae else dtype)
    return model


def load_late_unet(session: Any) -> None:
    """Let go of the parts the rest of the run will not use (the text encoders, and the VAE when
    latents are cached), then load the UNet into `session.model`. Sampling keeps them all."""
    import gc

    cfg, model = session.cfg, session.model
    if not cfg.sampling.sample_prompts:
        model.text_encoder1 = model.text_encoder2 = None
        if cfg.caching.cache_latents or cfg.caching.cache_latents_to_disk:
            model.vae = None
        gc.collect()  # a module held only by a reference cycle would otherwise outlive the UNet's load
    from engine.model.load import load_unet
    from engine.model.parts import loading_progress

    session.emit(Phase(time=time.time(), name=LOADING_MODEL, detail="UNet"))
    model.unet = load_unet(cfg.model, loading_progress(session.emit, before=session.chatter.reroute),
                           dtype=session.weight_dtype)
    _freeze_and_place(model.unet, session.accelerator.device, session.weight_dtype)


def _freeze_and_place(module: Any, device: Any, dtype: Any) -> None:
    if module is None:
        return
    module.requires_grad_(False)
    module.eval()
    module.to(device)
    if module.dtype != dtype:  # diffusers warns about any dtype cast, so cast only when needed
        module.to(dtype)
