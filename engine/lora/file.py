"""The LoRA `.safetensors` file as sd-scripts writes it: kohya keys, all-string metadata
(`ss_*`, `modelspec.*`), sd-scripts' two hashes, plus our reproducibility keys.

Saving is deterministic: the same tensors and the same metadata give the same bytes, so a
file read back as `network_weights` and saved again is byte-identical.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from engine.errors import ConfigError
from engine.versions import version_metadata

if TYPE_CHECKING:  # torch stays out of import time for the CLI
    import torch

    from engine.config.schema import RunConfig
    from engine.lora.network import LoRANetwork

BASE_MODEL_VERSION = "sdxl_base_v1-0"
MODELSPEC_VERSION = "1.0.1"
MODELSPEC_ARCHITECTURE = "stable-diffusion-xl-v1-base/lora"
MODELSPEC_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"
CONFIG_KEY = "sdxl_tui.config"
MANIFEST_HASH_KEY = "sdxl_tui.dataset_manifest_hash"
SAVE_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass(frozen=True)
class TrainingInfo:
    """What the training loop knows at save time that the config does not."""

    steps: int
    epoch: int
    started_at: float
    finished_at: float
    session_id: int
    num_train_images: int = 0  # includes repeats, as sd-scripts counts
    num_reg_images: int = 0
    num_batches_per_epoch: int = 0
    num_epochs: Optional[int] = None  # planned epochs of the run
    max_train_steps: Optional[int] = None  # planned steps of the run (resolved)
    resolution: tuple[int, int] = (1024, 1024)
    batch_size_per_device: Optional[int] = None
    datasets: list[dict[str, Any]] = field(default_factory=list)
    tag_frequency: dict[str, dict[str, int]] = field(default_factory=dict)
    bucket_info: Optional[dict[str, Any]] = None
    dataset_dirs: dict[str, dict[str, int]] = field(default_factory=dict)
    dataset_manifest_hash: str = ""
    optimizer_name: str = ""  # e.g. "bitsandbytes.optim.adamw.AdamW8bit"; defaults to optimizer_type
    num_validation_images: int = 0  # images validation_split held out (each once)
    validation_split: float = 0.0  # the first dataset's (sd-scripts has one, --validation_split)
    validation_seed: Optional[int] = None


def resolve_dtype(dtype: Union[str, "torch.dtype"]) -> "torch.dtype":
    """The torch dtype for a save_precision name (fp16, bf16, fp32), or the dtype itself. Raises ConfigError for
    another name."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in SAVE_PRECISIONS:
        raise ConfigError(f"unknown save precision '{dtype}'", key="save_precision", hint="fp16, bf16 or fp32")
    return getattr(torch, SAVE_PRECISIONS[dtype])


def addnet_model_hash(data: bytes) -> str:
    """sd-webui-additional-networks' hash: SHA-256 of everything after the JSON header."""
    header_len = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + header_len:]).hexdigest()


def addnet_legacy_hash(data: bytes) -> str:
    """The old hash: first 8 hex digits of SHA-256 over the 64 KiB at offset 1 MiB."""
    return hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def sd_scripts_hashes(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) computed as sd-scripts does: on the file serialised
    with only its `ss_*` metadata, which is meant never to change after training."""
    from safetensors.torch import save

    training_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = save(dict(tensors), metadata=training_only)
    return addnet_model_hash(data), addnet_legacy_hash(data)


def tensors_for_saving(state: Union["LoRANetwork", Mapping[str, "torch.Tensor"]],
                       dtype: Union[str, "torch.dtype"]) -> dict[str, "torch.Tensor"]:
    """The network's weights under sd-scripts key names, detached on the CPU in `dtype` (a DDP wrapper is unwrapped).
    Raises ConfigError for an unknown dtype name."""
    target = resolve_dtype(dtype)
    state = getattr(state, "module", state)  # a DDP-wrapped network
    source = state.kohya_state_dict() if hasattr(state, "kohya_state_dict") else state
    return {key: value.detach().to("cpu").to(target).contiguous() for key, value in source.items()}


def serialize(tensors: Mapping[str, "torch.Tensor"], metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes with a sorted header. safetensors' own writer orders the metadata as a
    hash map does (it varies between calls), which would break byte-identical round trips."""
    from safetensors.torch import save

    raw = save(dict(tensors), metadata=dict(metadata) or None)
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    ordered = {"__metadata__": header.pop("__metadata__")} if "__metadata__" in header else {}
    ordered.update(sorted(header.items()))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors aligns the data start to 8 bytes
    return len(text).to_bytes(8, "little") + text + raw[8 + length:]


def save_lora(path: Union[str, Path], network: Union["LoRANetwork", Mapping[str, "torch.Tensor"]],
              metadata: Mapping[str, str], dtype: Union[str, "torch.dtype"] = "fp16") -> Path:
    """Write the LoRA atomically; adds `sshs_model_hash` / `sshs_legacy_hash`."""
    from engine.storage.atomic import atomic_write_bytes

    bad = [k for k, v in metadata.items() if not isinstance(v, str)]
    if bad:
        raise TypeError(f"safetensors metadata must be strings; not: {', '.join(bad)}")
    tensors = tensors_for_saving(network, dtype)
    full = dict(metadata)
    full["sshs_model_hash"], full["sshs_legacy_hash"] = sd_scripts_hashes(tensors, full)
    return atomic_write_bytes(Path(path), serialize(tensors, full))


def load_lora(path: Union[str, Path]) -> tuple[dict[str, "torch.Tensor"], dict[str, str]]:
    """(tensors, metadata). Only safetensors: a pickle file could run code when loaded."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"LoRA file not found: {p}", path=str(p), hint="check the path")
    if p.suffix.lower() != ".safetensors":
        raise ConfigError(f"{p.name} is not a .safetensors file", path=str(p),
                          hint="convert it to .safetensors; pickle files (.pt/.ckpt) are refused because loading "
                               "them can run code")
    try:
        with safe_open(str(p), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for broken headers
        raise ConfigError(f"cannot read {p.name} as safetensors: {exc}", path=str(p),
                          hint="the file is damaged or incomplete (interrupted copy?)") from None
    return tensors, metadata


def _jsonable(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _iso_date(timestamp: float) -> str:
    return _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc).replace(microsecond=0).isoformat()


def _model_name(name: str) -> str:
    from engine.config.privacy import base_name, looks_like_local_path

    return base_name(name) if os.path.exists(name) or looks_like_local_path(name) else name


def _text_encoder_lr_value(cfg: "RunConfig") -> str:
    lr1, lr2 = cfg.optimizer.text_encoder_lr1, cfg.optimizer.text_encoder_lr2
    if lr1 == lr2:
        return str(lr1)
    return str([cfg.optimizer.resolved_text_encoder_lr1, cfg.optimizer.resolved_text_encoder_lr2])


def sd_scripts_metadata(cfg: "RunConfig", info: TrainingInfo) -> dict[str, str]:
    """The `ss_*` keys, valued as sd-scripts writes them (str() of its values; JSON where noted)."""
    net, opt, tr = cfg.network, cfg.optimizer, cfg.training
    optimizer = info.optimizer_name or opt.optimizer_type
    if opt.optimizer_args:
        optimizer += f"({','.join(opt.optimizer_args)})"
    batch = info.batch_size_per_device or tr.train_batch_size
    values: dict[str, Any] = {
        "ss_session_id": info.session_id,
        "ss_training_started_at": info.started_at,
        "ss_training_finished_at": info.finished_at,
        "ss_output_name": cfg.saving.output_name,
        "ss_learning_rate": opt.learning_rate,
        "ss_text_encoder_lr": _text_encoder_lr_value(cfg),
        "ss_unet_lr": opt.unet_lr,
        "ss_num_train_images": info.num_train_images,
        "ss_num_reg_images": info.num_reg_images,
        "ss_num_batches_per_epoch": info.num_batches_per_epoch,
        "ss_num_epochs": info.num_epochs if info.num_epochs is not None else tr.max_train_epochs,
        "ss_epoch": info.epoch,
        "ss_steps": info.steps,
        "ss_batch_size_per_device": batch,
        "ss_total_batch_size": batch * tr.gradient_accumulation_steps,
        "ss_gradient_checkpointing": cfg.precision.gradient_checkpointing,
        "ss_gradient_accumulation_steps": tr.gradient_accumulation_steps,
        "ss_max_train_steps": info.max_train_steps if info.max_train_steps is not None else tr.max_train_steps,
        "ss_lr_warmup_steps": opt.lr_warmup_steps,
        "ss_lr_scheduler": opt.lr_scheduler,
        "ss_network_module": net.network_module,
        "ss_network_dim": net.network_dim,
        "ss_network_alpha": net.network_alpha,
        "ss_network_dropout": net.network_dropout,
        "ss_network_args": _jsonable(net.parsed_args),
        "ss_mixed_precision": cfg.precision.mixed_precision,
        "ss_full_fp16": False,
        "ss_v2": False,
        "ss_base_model_version": BASE_MODEL_VERSION,
        "ss_resolution": tuple(info.resolution),
        "ss_clip_skip": cfg.model.clip_skip,
        "ss_cache_latents": cfg.caching.cache_latents,
        "ss_seed": tr.seed,
        "ss_noise_offset": tr.noise_offset,
        "ss_min_snr_gamma": tr.min_snr_gamma,
        "ss_max_grad_norm": opt.max_grad_norm,
        "ss_prior_loss_weight": cfg.dataset.prior_loss_weight,
        "ss_optimizer": optimizer,
        "ss_datasets": _jsonable(info.datasets),
        "ss_tag_frequency": _jsonable(info.tag_frequency),
        "ss_dataset_dirs": _jsonable(info.dataset_dirs),
        "ss_bucket_info": _jsonable(info.bucket_info),
        "ss_sd_model_name": _model_name(cfg.model.pretrained_model_name_or_path),
        "ss_num_validation_images": info.num_validation_images,
        "ss_validation_seed": info.validation_seed,
        "ss_validation_split": info.validation_split,
        "ss_max_validation_steps": cfg.logging.max_validation_steps,
        "ss_validate_every_n_epochs": cfg.logging.validate_every_n_epochs,
        "ss_validate_every_n_steps": cfg.logging.validate_every_n_steps,
    }
    if cfg.model.vae:
        values["ss_vae_name"] = _model_name(cfg.model.vae)
    return {key: str(value) for key, value in values.items()}


def modelspec_metadata(cfg: "RunConfig", info: TrainingInfo) -> dict[str, str]:
    """The Stability AI model-spec keys (modelspec.*) sd-scripts writes: spec version, architecture, title,
    resolution (WxH pixels), date."""
    width, height = info.resolution
    return {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": MODELSPEC_ARCHITECTURE,
        "modelspec.implementation": MODELSPEC_IMPLEMENTATION,
        "modelspec.title": cfg.saving.output_name,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": _iso_date(info.finished_at),
    }


def build_metadata(cfg: "RunConfig", *, training_info: TrainingInfo) -> dict[str, str]:
    """Everything written beside the tensors (the hashes are added by `save_lora`)."""
    from engine.config.privacy import without_local_paths
    from engine.config.toml_file import dumps_config

    metadata = sd_scripts_metadata(cfg, training_info)
    metadata.update(modelspec_metadata(cfg, training_info))
    # base names only, as sd-scripts: a shared LoRA must not carry the trainer's folders
    metadata[CONFIG_KEY] = dumps_config(without_local_paths(cfg))
    metadata.update(version_metadata())
    metadata[MANIFEST_HASH_KEY] = training_info.dataset_manifest_hash
    return metadata
