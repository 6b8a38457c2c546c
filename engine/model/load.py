"""Loading SDXL: every part of the base model (a diffusers folder, a Hub id or a single file),
a separate VAE, and the training noise scheduler.

Model sources are recognised and checked in engine/model/source.py before anything loads here.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from engine.errors import ModelError
from engine.model.library_bars import transformers_bars_off
from engine.model.parts import LoadProgress, load_parts
from engine.model.prediction import training_scheduler_config
from engine.model.source import (
    ModelSource,
    check_sdxl_shape,
    check_unet_config,
    checked_tokenizer,
    detect_model_source,
    hub_error,
    hub_offline,
)


@dataclass
class SdxlModel:
    """The loaded SDXL parts (diffusers UNet2DConditionModel, AutoencoderKL, CLIPTextModel and
    CLIPTextModelWithProjection with their tokenizers, the DDPM noise scheduler), where they came from,
    and the two caption options that change how captions encode.
    """
    unet: Any
    vae: Any
    text_encoder1: Any
    text_encoder2: Any
    tokenizer1: Any
    tokenizer2: Any
    noise_scheduler: Any
    source: ModelSource
    max_token_length: Optional[int] = None  # sd-scripts' option: captions past 75 tokens (engine/model/long_prompts.py)
    weighted_captions: bool = False  # sd-scripts' option: (word:1.2) weights (engine/model/weighted_captions.py)


def _load_from_pretrained(cls, location: str, subfolder: str, source: ModelSource, **kwargs):
    try:
        try:
            return cls.from_pretrained(location, subfolder=subfolder or None, **kwargs)
        except OSError:
            if not kwargs:  # tokenizers have no weight variants
                raise
            # Folders downloaded with only the half-size files (`*.fp16.safetensors`).
            return cls.from_pretrained(location, subfolder=subfolder or None, variant="fp16", **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        if source.kind == "hub":
            raise hub_error(source.path, exc) from exc
        raise ModelError(f"could not load {subfolder or 'model'} from {location}: {exc}",
                         hint="the model folder is incomplete or damaged") from exc


def _load_diffusers_parts(source: ModelSource, progress: Optional[LoadProgress] = None, dtype=None,
                          with_unet: bool = True) -> dict:
    if progress is not None:  # importing diffusers alone takes tens of seconds on a busy machine
        progress(0, 7, "libraries (diffusers, transformers)")
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    where = source.path
    # diffusers names the dtype argument torch_dtype, transformers 5 names it dtype.
    as_fp32 = {"torch_dtype": torch.float32}
    dtype = dtype or torch.float32

    def unet():
        loaded = _load_from_pretrained(UNet2DConditionModel, where, "unet", source, torch_dtype=dtype)
        check_unet_config(dict(loaded.config), where)  # a Hub id was not checked before the download
        return loaded

    def tokenizer(subfolder: str):
        return checked_tokenizer(_load_from_pretrained(CLIPTokenizer, where, subfolder, source),
                                 f"{where} {subfolder}/")

    parts = [
        ("unet", "UNet", unet if with_unet else lambda: None),
        ("vae", "VAE", lambda: _load_from_pretrained(AutoencoderKL, where, "vae", source, **as_fp32)),
        ("text_encoder1", "text encoder 1", lambda: _load_from_pretrained(
            CLIPTextModel, where, "text_encoder", source, dtype=dtype)),
        ("text_encoder2", "text encoder 2", lambda: _load_from_pretrained(
            CLIPTextModelWithProjection, where, "text_encoder_2", source, dtype=dtype)),
        ("tokenizer1", "tokenizer 1", lambda: tokenizer("tokenizer")),
        ("tokenizer2", "tokenizer 2", lambda: tokenizer("tokenizer_2")),
        ("scheduler_config", "scheduler", lambda: _scheduler_config(where, source)),
    ]
    # a Hub source keeps huggingface_hub's download bars (transformers' switch turns those off too)
    with nullcontext() if source.kind == "hub" else transformers_bars_off():
        return load_parts(parts, progress)


def _scheduler_config(where: str, source: ModelSource) -> dict:
    from diffusers import DDPMScheduler

    try:
        return dict(DDPMScheduler.load_config(where, subfolder="scheduler"))
    except (OSError, ValueError) as exc:
        if source.kind == "hub":
            raise hub_error(source.path, exc) from exc
        raise ModelError(f"{where} has no readable scheduler/scheduler_config.json ({exc})") from exc


def make_noise_scheduler(config: dict):
    """A DDPMScheduler for training noise, keeping the model's betas and prediction type."""
    from diffusers import DDPMScheduler

    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
            "prediction_type", "steps_offset", "timestep_spacing", "rescale_betas_zero_snr")
    kwargs = {k: config[k] for k in keys if k in config}
    return DDPMScheduler(clip_sample=False, **kwargs)


def load_sdxl(model, progress: Optional[LoadProgress] = None, dtype=None, with_unet: bool = True) -> SdxlModel:
    """Load every part of the base model named by `model` (an engine.config.schema.ModelSection) on
    the CPU: the UNet and text encoders in `dtype` (a torch dtype, float32 when None: loading
    straight into the training dtype means a bf16 run never holds a float32 UNet, 10.3 GB for
    SDXL), the VAE in float32. `progress(done, total, part)` hears of each part as it starts.
    `with_unet=False` leaves `unet` None (`load_unet` loads it later).
    Raises ModelError (exit 66) naming the source and the fix."""
    source = detect_model_source(model.pretrained_model_name_or_path)
    if source.kind != "hub":
        check_sdxl_shape(source)
    if source.kind == "single_file":
        from engine.model.single_file_load import load_single_file_parts

        parts = load_single_file_parts(Path(source.path), model.tokenizer_cache_dir, with_vae=not model.vae,
                                       progress=progress, dtype=dtype, with_unet=with_unet)
    else:
        parts = _load_diffusers_parts(source, progress, dtype, with_unet)
    if model.vae:
        parts["vae"] = load_vae(model.vae, base=source, tokenizer_cache_dir=model.tokenizer_cache_dir)
    return SdxlModel(
        unet=parts["unet"], vae=parts["vae"],
        text_encoder1=parts["text_encoder1"], text_encoder2=parts["text_encoder2"],
        tokenizer1=parts["tokenizer1"], tokenizer2=parts["tokenizer2"],
        noise_scheduler=make_noise_scheduler(training_scheduler_config(
            parts["scheduler_config"], v_parameterization=model.v_parameterization,
            zero_terminal_snr=model.zero_terminal_snr)), source=source,
    )


def load_unet(model, progress: Optional[LoadProgress] = None, dtype=None):
    """The UNet alone of the base model named by `model` (an engine.config.schema.ModelSection), in
    `dtype` (float32 when None) on the CPU. Raises ModelError (exit 66)."""
    import torch

    source = detect_model_source(model.pretrained_model_name_or_path)
    if progress is not None:
        progress(0, 1, "UNet")
    if source.kind == "single_file":
        from engine.model.single_file_load import load_single_file_unet

        unet = load_single_file_unet(Path(source.path), model.tokenizer_cache_dir, dtype)
    else:
        from diffusers import UNet2DConditionModel

        unet = _load_from_pretrained(UNet2DConditionModel, source.path, "unet", source,
                                     torch_dtype=dtype or torch.float32)
        check_unet_config(dict(unet.config), source.path)
    if progress is not None:
        progress(1, 1, "")
    return unet


def load_vae(name_or_path: str, base: Optional[ModelSource] = None, tokenizer_cache_dir: str = ""):
    """A separate VAE: a diffusers folder (the VAE's own or a whole model's), a Hub id, or a
    single file (its config from the base model, tokenizer_cache_dir or SDXL's)."""
    from diffusers import AutoencoderKL

    source = detect_model_source(name_or_path)
    if source.kind == "single_file":
        from engine.model.single_file_load import load_single_file_vae

        return load_single_file_vae(Path(source.path), base, tokenizer_cache_dir)
    subfolder = ""
    if source.kind == "diffusers" and (Path(source.path) / "vae").is_dir():
        subfolder = "vae"
    elif source.kind == "hub" and not _hub_has_root_config(source.path):
        subfolder = "vae"
    import torch

    return _load_from_pretrained(AutoencoderKL, source.path, subfolder, source, torch_dtype=torch.float32)


def _hub_has_root_config(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
        return True
    if isinstance(try_to_load_from_cache(repo_id, "vae/config.json"), str) or hub_offline():
        return False
    try:
        from huggingface_hub import file_exists

        return file_exists(repo_id, "config.json")
    except Exception:  # network trouble: let from_pretrained report it
        return True
