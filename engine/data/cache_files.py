"""The cache files: where each lives, the key it is stored under, reading and writing one.

Disk layout (one file per image, beside it, so a dataset folder carries its caches):
- latents: `<image file name>.<W>x<H>.sdxl-tui.safetensors` (W x H = bucket size) with
  `latents` (4, H/8, W/8) float32 and, when flip_aug is on, `latents_flipped`;
- text-encoder outputs: `<image file name>.te.sdxl-tui.safetensors` with `hidden` (77, w1+w2)
  and `pooled` (proj), stored in the training dtype.
Names differ from sd-scripts' `.npz` files on purpose: the two tools never read each other's
caches. Each file's safetensors metadata holds a JSON `key`: the image (size, mtime, SHA-256),
bucket, resize, crop, flip, VAE identity (its config and a weight fingerprint) and dtype; or
the caption text, the text encoders' identity and dtype. A file is reused only when its key
matches; otherwise it is recomputed and replaced atomically (engine/storage/atomic.py). An image
whose mtime changed but whose bytes did not (a copy, a `touch`) is recognised by its hash.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from engine.errors import OutputError
from engine.storage.atomic import atomic_save_safetensors

if TYPE_CHECKING:  # pragma: no cover
    import torch

CACHE_FORMAT = 1
LATENT_SUFFIX = ".sdxl-tui.safetensors"
TEXT_SUFFIX = ".te.sdxl-tui.safetensors"
FINGERPRINT_SAMPLES = 16  # values read from each weight tensor for a module's fingerprint


# ---- identities ------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks. Raises OSError when it cannot be read."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageIdentity:
    """An image file as the cache knows it: cheap stat fields, plus its hash when computed."""
    size: int
    mtime_ns: int
    sha256: str = ""

    @classmethod
    def of(cls, path: Path) -> "ImageIdentity":
        """Size (bytes) and mtime (ns) from one `os.stat`; no hash yet. Raises OSError for a missing file."""
        st = os.stat(path)
        return cls(st.st_size, st.st_mtime_ns)


_LOAD_ONLY_CONFIG_KEYS = {"transformers_version", "torch_dtype", "dtype"}


def module_fingerprint(module: Any) -> str:
    """Config + a sample of every weight: tells two models apart without hashing gigabytes."""
    import torch

    digest = hashlib.sha256()
    config = getattr(module, "config", None)
    if config is not None:
        raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        # where and by which library version it was loaded from says nothing about the weights
        raw = {k: v for k, v in raw.items() if not k.startswith("_") and k not in _LOAD_ONLY_CONFIG_KEYS}
        digest.update(json.dumps(raw, sort_keys=True, default=str).encode())
    samples = []
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        flat = tensor.detach().reshape(-1)
        if flat.numel() == 0 or not flat.is_floating_point():
            continue
        samples.append(flat[sample_positions(flat.numel(), FINGERPRINT_SAMPLES).to(flat.device)].float())
    if samples:
        digest.update(torch.cat(samples).cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def sample_positions(numel: int, samples: int) -> Any:
    """`min(samples, numel)` evenly spaced indices from 0 to `numel - 1` (int64 tensor), in integer
    arithmetic: a float32 linspace rounds the last index of a 37.9 M-element tensor (SDXL's CLIP-L
    token embedding) up to `numel`, out of bounds."""
    import torch

    count = min(samples, numel)
    if count <= 1:
        return torch.zeros(count, dtype=torch.int64)
    return torch.arange(count, dtype=torch.int64) * (numel - 1) // (count - 1)


def dtype_name(dtype: Any) -> str:
    """A torch dtype as the cache keys spell it: torch.float16 -> "float16"."""
    return str(dtype).replace("torch.", "")


# ---- reading and writing one cache file ------------------------------------------------------

def latent_cache_path(image: Path, bucket: tuple[int, int]) -> Path:
    """The latent cache file beside `image` for `bucket` (width, height in pixels)."""
    return image.with_name(f"{image.name}.{bucket[0]}x{bucket[1]}{LATENT_SUFFIX}")


def text_cache_path(image: Path) -> Path:
    """The text-encoder-output cache file beside `image`."""
    return image.with_name(image.name + TEXT_SUFFIX)


def _unreadable() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    return (OSError, ValueError, RuntimeError, KeyError, SafetensorError)


def read_cache_key(path: Path) -> Optional[dict]:
    """The stored key, or None when the file is missing or unreadable (then it is rewritten)."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get("key")
        return json.loads(raw) if raw else None
    except _unreadable():  # a damaged or foreign file is simply recomputed
        return None


def read_tensors(path: Path, names: Sequence[str]) -> Optional[dict[str, "torch.Tensor"]]:
    """The named tensors of a cache file (on CPU, as stored), or None when the file is missing,
    damaged or lacks one of them (the caller then recomputes).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in names}
    except _unreadable():
        return None


def write_cache(path: Path, tensors: dict[str, "torch.Tensor"], key: dict) -> None:
    """Write `tensors` (made contiguous, on CPU) with `key` as JSON metadata, atomically.

    Raises OutputError (with a hint) when the file cannot be written.
    """
    try:
        atomic_save_safetensors(path, {k: v.contiguous().cpu() for k, v in tensors.items()},
                                metadata={"key": json.dumps(key, sort_keys=True)})
    except OSError as exc:
        raise OutputError(f"cannot write the cache file {path}: {exc.strerror or exc}",
                          hint="make the image folder writable, or turn off the *_to_disk caching option"
                          ) from None


def latent_key(identity: ImageIdentity, *, bucket, resized, crop_top_left, flip: bool, vae_id: str,
               dtype: str, interpolation: Optional[str]) -> dict:
    """The key a latent cache file is stored under: image identity, bucket / resized size and crop
    (pixels: (width, height), crop (top, left)), flip, VAE fingerprint, VAE dtype name, resize interpolation.
    """
    return {"format": CACHE_FORMAT, "kind": "latents",
            "image": {"size": identity.size, "mtime_ns": identity.mtime_ns, "sha256": identity.sha256},
            "bucket": list(bucket), "resized": list(resized), "crop_top_left": list(crop_top_left),
            "flip": flip, "vae": vae_id, "dtype": dtype, "interpolation": interpolation}


def latent_key_matches(stored: Optional[dict], wanted: dict, image: Path) -> bool:
    """Same settings and the same image bytes; a stored flip pair also serves a run without flips."""
    if not stored:
        return False
    for name in ("format", "kind", "bucket", "resized", "crop_top_left", "vae", "dtype", "interpolation"):
        if stored.get(name) != wanted.get(name):
            return False
    if wanted["flip"] and not stored.get("flip"):
        return False
    have, want = stored.get("image") or {}, wanted["image"]
    if have.get("size") != want["size"]:
        return False
    if have.get("mtime_ns") == want["mtime_ns"]:
        return True
    return bool(have.get("sha256")) and have.get("sha256") == (want["sha256"] or file_sha256(image))


def text_key(caption: str, *, encoders_id: str, dtype: str) -> dict:
    """The key a text-encoder-output cache file is stored under: the caption, the encoders' identity
    (text_cache.text_encoders_identity) and the stored dtype name.
    """
    return {"format": CACHE_FORMAT, "kind": "text", "caption": caption, "encoders": encoders_id,
            "dtype": dtype}
