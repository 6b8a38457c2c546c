"""Find, check and load an SDXL base model for training.

Three kinds of source: a diffusers folder, one original-layout `.safetensors` file, or a
Hugging Face Hub id. `detect_model_source` and `check_sdxl_shape` are cheap (no torch, no
weights read; the wizard calls them as a user types); `load_sdxl` loads everything in
float32 on the CPU and leaves moving and casting to the engine.

Single files carry weights only. Their configs come, in order, from `tokenizer_cache_dir`
(a folder with `tokenizer/`, `tokenizer_2/` and, if present, the diffusers configs), from
SDXL base's own configs when the file has SDXL base's dimensions, or not at all (an error
says what to provide). Tokenizers come from `tokenizer_cache_dir` or the Hub cache.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from engine.errors import ModelError
from engine.model.single_file import TE1_PREFIX, TE2_PREFIX, UNET_PREFIX, VAE_PREFIX
from engine.units import human_bytes

SDXL_BASE_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
WEIGHT_SUFFIXES = (".safetensors", ".sft", ".gguf", ".onnx") + PICKLE_SUFFIXES
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TO_K = "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"  # first cross-attention in SD 1/2/XL

ModelKind = Literal["diffusers", "single_file", "hub"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from (diffusers folder, single file, Hub id), its size in bytes when known, and a line
    describing it."""
    kind: ModelKind
    path: str
    size_bytes: Optional[int]
    description: str


@dataclass(frozen=True)
class ModelShape:
    """What the cheap check found (widths from config or tensor shapes)."""

    description: str
    cross_attention_dim: int
    text_encoder_widths: tuple[int, int]
    has_vae: bool
    is_sdxl_base_size: bool  # the real SDXL base dimensions (not the tiny test model)


def _folder_size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def _looks_local(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or text.lower().endswith(WEIGHT_SUFFIXES) or "\\" in text


def detect_model_source(name_or_path: str) -> ModelSource:
    """Say what kind of model reference this is, without loading anything."""
    text = (name_or_path or "").strip()
    if not text:
        raise ModelError("no model given", hint="give a Hub id (owner/name), a diffusers folder or a .safetensors file")
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file() or (path / "unet").is_dir():
            size = _folder_size(path)
            return ModelSource("diffusers", str(path), size, f"diffusers folder {path} ({human_bytes(size)})")
        if (path / "config.json").is_file():
            size = _folder_size(path)
            return ModelSource("diffusers", str(path), size, f"diffusers component folder {path} ({human_bytes(size)})")
        raise ModelError(f"{path} is a folder but not a diffusers model (no model_index.json or unet/ inside)",
                         hint="point to the folder that holds model_index.json, or to a .safetensors file")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise ModelError(
                f"{path} is a pickle checkpoint ({suffix}); loading one can run arbitrary code, so it is refused",
                hint="convert it to .safetensors first (e.g. load it with torch.load(weights_only=True) in a "
                     "trusted environment and save with safetensors.torch.save_file), or use a .safetensors release")
        if suffix not in (".safetensors", ".sft"):
            raise ModelError(f"{path}: unknown model file type '{suffix or 'no extension'}'",
                             hint="use a .safetensors file, a diffusers folder or a Hub id")
        size = path.stat().st_size
        return ModelSource("single_file", str(path), size, f"single file {path.name} ({human_bytes(size)})")
    if _looks_local(text) or not _HUB_ID.match(text):
        raise ModelError(f"model not found: {text}",
                         hint="check the path; a Hub id looks like owner/name (e.g. " + SDXL_BASE_REPO + ")")
    return ModelSource("hub", text, None, f"Hugging Face Hub model {text}")


# ---------------------------------------------------------------- cheap shape check

def read_header_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in a .safetensors file, read from its header (no weights loaded). Raises ModelError for a
    file that is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "numpy") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable .safetensors file ({exc})",
                         hint="the file is corrupt or incomplete: download it again") from exc


def describe_single_file(shapes: dict[str, tuple[int, ...]]) -> ModelShape:
    """Decide from key names and shapes whether a single file is an SDXL base checkpoint."""
    keys = shapes.keys()
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k or ".lora_A." in k for k in keys):
        raise ModelError("this is a LoRA file, not a base model",
                         hint="choose an SDXL base checkpoint here; to continue training this LoRA, "
                              "set network_weights")
    has_unet = any(k.startswith(UNET_PREFIX) for k in keys)
    if not has_unet:
        if any(k.startswith(("encoder.", "decoder.", VAE_PREFIX)) for k in keys):
            raise ModelError("this is a VAE alone, not a base model",
                             hint="set it as the separate vae option and choose an SDXL base model")
        if any(k.startswith(("down_blocks.", "add_embedding.")) for k in keys):
            raise ModelError("this is a diffusers-format UNet weights file, not a full checkpoint",
                             hint="point to the whole diffusers folder (the one with model_index.json)")
        sample = ", ".join(list(keys)[:3])
        raise ModelError(f"this does not look like a Stable Diffusion checkpoint (first keys: {sample})",
                         hint="choose an SDXL base .safetensors checkpoint")
    cross = shapes.get(UNET_PREFIX + _TO_K, (0, 0))[-1]
    if any(k.startswith("cond_stage_model.") for k in keys) or not any(k.startswith("conditioner.") for k in keys):
        family = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x"}.get(cross, "a non-SDXL model")
        raise ModelError(
            f"this looks like {family} (cross-attention width {cross}, no conditioner.embedders), not SDXL",
            hint="choose an SDXL base checkpoint (sd_xl_base_1.0.safetensors or a fine-tune of it)")
    if not any(k.startswith(TE2_PREFIX) for k in keys) or not any(k.startswith(TE1_PREFIX) for k in keys):
        if any(k.startswith("conditioner.embedders.0.model.") for k in keys):
            raise ModelError("this is the SDXL refiner (one OpenCLIP text encoder), not the base model",
                             hint="LoRA training needs SDXL base (two text encoders)")
        raise ModelError("this SDXL file lacks a text encoder (conditioner.embedders.0/1)",
                         hint="use a complete SDXL checkpoint, or the diffusers folder")
    te1 = shapes.get(TE1_PREFIX + "text_model.embeddings.position_embedding.weight", (0, 0))[-1]
    te2 = shapes.get(TE2_PREFIX + "positional_embedding", (0, 0))[-1]
    if cross != te1 + te2 or UNET_PREFIX + "label_emb.0.0.weight" not in shapes:
        raise ModelError(f"this file's UNet (cross-attention {cross}) does not fit its text encoders "
                         f"({te1} + {te2}); it is not an SDXL base checkpoint")
    has_vae = any(k.startswith(VAE_PREFIX) for k in keys)
    base_size = (cross, te1, te2) == (2048, 768, 1280)
    label = "SDXL base" if base_size else f"SDXL-shaped (cross-attention {cross})"
    return ModelShape(label + ("" if has_vae else ", no VAE inside"), cross, (te1, te2), has_vae, base_size)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}",
                         hint="the model folder is incomplete: download it again") from exc


def check_unet_config(config: dict, where: str) -> int:
    """Refuse a diffusers UNet config that is not SDXL base's kind; return its cross-attention width."""
    cross = config.get("cross_attention_dim")
    cross = cross[0] if isinstance(cross, list) else cross
    if config.get("addition_embed_type") != "text_time":
        family = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x"}.get(cross, "a non-SDXL model")
        raise ModelError(f"{where} looks like {family} (cross-attention width {cross}), not SDXL",
                         hint="choose an SDXL base model")
    if cross == 1280:  # text encoder 2 alone: the refiner
        raise ModelError(f"{where} looks like the SDXL refiner (cross-attention width 1280), not the base model",
                         hint="LoRA training needs SDXL base (two text encoders)")
    return cross


def describe_diffusers_folder(folder: Path) -> ModelShape:
    """The shape of a diffusers folder's model, read from its configs. Raises ModelError when it is not a whole SDXL
    base model (a lone component, missing parts, the refiner, SD 1.x/2.x)."""
    unet_config = folder / "unet" / "config.json"
    if not unet_config.is_file():
        if (folder / "config.json").is_file():
            config = _read_json(folder / "config.json")
            what = config.get("_class_name", "a single component")
            raise ModelError(f"{folder} holds {what} alone, not a whole model",
                             hint="point to the folder with model_index.json (a VAE goes in the vae option)")
        raise ModelError(f"{folder} has no unet/config.json", hint="the diffusers folder is incomplete")
    cross = check_unet_config(_read_json(unet_config), str(folder))
    if not (folder / "text_encoder").is_dir():
        raise ModelError(f"{folder} has no text_encoder/: it looks like the SDXL refiner, not the base model",
                         hint="LoRA training needs SDXL base (two text encoders)")
    te1 = _read_json(folder / "text_encoder" / "config.json").get("hidden_size", 0)
    te2 = _read_json(folder / "text_encoder_2" / "config.json").get("hidden_size", 0)
    base_size = (cross, te1, te2) == (2048, 768, 1280)
    label = "SDXL base" if base_size else f"SDXL-shaped (cross-attention {cross})"
    return ModelShape(label, cross, (te1, te2), (folder / "vae").is_dir(), base_size)


def check_sdxl_shape(source: "ModelSource | str") -> Optional[ModelShape]:
    """Raise ModelError when a local model is not SDXL base; None for a Hub id not yet cached.
    Reads only configs or a safetensors header (cheap enough to run as a user types)."""
    if isinstance(source, str):
        source = detect_model_source(source)
    if source.kind == "single_file":
        return describe_single_file(read_header_shapes(Path(source.path)))
    if source.kind == "diffusers":
        return describe_diffusers_folder(Path(source.path))
    cached = _cached_hub_folder(source.path)
    return describe_diffusers_folder(cached) if cached else None


def _cached_hub_folder(repo_id: str) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "model_index.json")
    return Path(found).parent if isinstance(found, str) else None


# ---------------------------------------------------------------- loading


def checked_tokenizer(tokenizer, where: str):
    """transformers 5 returns an empty tokenizer (only the special tokens) when the files
    are missing instead of failing; a CLIP BPE vocabulary has at least its 256 bytes."""
    if len(tokenizer) < 258:
        raise ModelError(f"no usable tokenizer at {where} (vocab.json / merges.txt / tokenizer.json missing)",
                         hint="the model folder is incomplete: copy or download its tokenizer folders again")
    return tokenizer


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set to 1, true, yes or on."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")



HUB_PROBE_TIMEOUT_S = 3.0  # a look-up on a machine with no route out fails within this (and DNS)


def _hub_address() -> tuple[str, int]:
    """Where a Hub request would connect first: the HTTPS proxy when one is set, else HF_ENDPOINT."""
    from urllib.parse import urlparse

    url = (os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
           or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    parsed = urlparse(url if "://" in url else f"http://{url}")
    return parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the Hub (or the proxy) opens within `timeout` seconds, name
    resolution included (it runs in a daemon thread, as getaddrinfo has no timeout of its own)."""
    import socket
    import threading

    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(_hub_address(), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, name="sdxl-tui-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def hub_unreachable_error(repo_id: str) -> ModelError:
    """The error for a Hub id that is not cached while the Hub cannot be reached, naming the offline fixes."""
    host, port = _hub_address()
    return ModelError(
        f"{repo_id} is not in the Hugging Face cache and the Hub ({host}:{port}) cannot be reached",
        hint="on a machine without internet: set HF_HUB_OFFLINE=1 and use a local diffusers folder or a "
             ".safetensors file (SDXL's tokenizers are built in; tokenizer_cache_dir can point to a copy of "
             f"them); or download it once where there is a connection (hf download {repo_id})")


def hub_error(repo_id: str, exc: Exception) -> ModelError:
    """The error for a Hub id that failed to load: offline and not cached, or the Hub's own error `exc`."""
    if hub_offline():
        return ModelError(f"{repo_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                          hint=f"download it once online (hf download {repo_id}), unset HF_HUB_OFFLINE, "
                               "or point to a local diffusers folder or .safetensors file "
                               "(tokenizer_cache_dir can hold the tokenizers)")
    return ModelError(f"could not load {repo_id} from the Hugging Face Hub: {exc}",
                      hint="check the id and your connection (gated models need `hf auth login`)")
