"""Latent and text-encoder caches, in memory and on disk, keyed by what they depend on.

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

A latent is one sample of the VAE's latent distribution (as sd-scripts caches it); its noise
is seeded from the key, so the same image and settings give the same latent on every run.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from engine.data.transfer import to_device
from engine.errors import OutputError
from engine.storage.atomic import atomic_save_safetensors

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from engine.model.load import SdxlModel

CACHE_FORMAT = 1
LATENT_SUFFIX = ".sdxl-tui.safetensors"
TEXT_SUFFIX = ".te.sdxl-tui.safetensors"
FINGERPRINT_SAMPLES = 16  # values read from each weight tensor for a module's fingerprint
PROGRESS_INTERVAL_S = 0.25


# ---- identities ------------------------------------------------------------------------------

def file_sha256(path: Path) -> str:
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
        positions = torch.linspace(0, flat.numel() - 1, min(FINGERPRINT_SAMPLES, flat.numel()),
                                   device=flat.device).long()
        samples.append(flat[positions].float())
    if samples:
        digest.update(torch.cat(samples).cpu().numpy().tobytes())
    return digest.hexdigest()[:32]


def dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


# ---- reading and writing one cache file ------------------------------------------------------

def latent_cache_path(image: Path, bucket: tuple[int, int]) -> Path:
    return image.with_name(f"{image.name}.{bucket[0]}x{bucket[1]}{LATENT_SUFFIX}")


def text_cache_path(image: Path) -> Path:
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
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in names}
    except _unreadable():
        return None


def write_cache(path: Path, tensors: dict[str, "torch.Tensor"], key: dict) -> None:
    try:
        atomic_save_safetensors(path, {k: v.contiguous().cpu() for k, v in tensors.items()},
                                metadata={"key": json.dumps(key, sort_keys=True)})
    except OSError as exc:
        raise OutputError(f"cannot write the cache file {path}: {exc.strerror or exc}",
                          hint="make the image folder writable, or turn off the *_to_disk caching option"
                          ) from None


def latent_key(identity: ImageIdentity, *, bucket, resized, crop_top_left, flip: bool, vae_id: str,
               dtype: str, interpolation: Optional[str]) -> dict:
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
    return {"format": CACHE_FORMAT, "kind": "text", "caption": caption, "encoders": encoders_id,
            "dtype": dtype}


# ---- progress --------------------------------------------------------------------------------

def progress_rate(done: int, total: int, elapsed: float) -> tuple[float, Optional[float]]:
    """(items per second since the phase began, seconds left at that rate); (0, None) before
    anything is known. The mean over the whole phase: steadier than the last interval's."""
    if done <= 0 or elapsed <= 0:
        return 0.0, None
    rate = done / elapsed
    return rate, max(0.0, (total - done) / rate)


@dataclass
class Progress:
    """Phase + throttled PhaseProgress events; stop checks between items."""
    emit: Callable[[Any], None]
    name: str
    total: int
    control: Any = None
    done: int = 0
    unit: str = "images"
    _last: float = field(default=0.0, repr=False)
    _began: float = field(default=0.0, repr=False)

    def start(self, detail: str = "") -> None:
        from engine.events.types import Phase

        self._began = time.time()
        self.emit(Phase(time=self._began, name=self.name, total=self.total, detail=detail))

    def advance(self, count: int = 1) -> None:
        from engine.events.types import PhaseProgress

        self.done += count
        now = time.time()
        if self.done >= self.total or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            rate, eta = progress_rate(self.done, self.total, now - (self._began or now))
            self.emit(PhaseProgress(time=now, name=self.name, done=self.done, total=self.total, unit=self.unit,
                                    rate=rate, eta_seconds=eta))

    def log(self, message: str) -> None:
        from engine.events.types import Log

        self.emit(Log(time=time.time(), message=message))

    @property
    def stop_requested(self) -> bool:
        return bool(self.control is not None and self.control.stop_requested)


# ---- latents ---------------------------------------------------------------------------------

def pixels_to_tensor(array: Any) -> "torch.Tensor":
    """H x W x 3 uint8 -> (3, H, W) float32 in [-1, 1], as the VAE expects."""
    import numpy as np
    import torch

    if not array.flags.writeable:  # PIL hands out read-only arrays; torch wants to own one
        array = np.array(array)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


@dataclass(frozen=True)
class LatentJob:
    """One image to cache: its centre crop at its bucket size (and the mirror image)."""
    item_index: int
    image: Path
    bucket: tuple[int, int]
    resized: tuple[int, int]
    crop_top_left: tuple[int, int]
    flip: bool
    interpolation: Optional[str] = None


class LatentStore:
    """Cached latents stacked once per bucket on the device, gathered per batch by index."""

    def __init__(self) -> None:
        self._rows: dict[int, tuple[tuple[int, int], int]] = {}
        self._pending: dict[tuple[int, int], list] = {}
        self._stacks: dict[tuple[int, int], "torch.Tensor"] = {}
        self._flipped: dict[tuple[int, int], Optional["torch.Tensor"]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, item_index: int) -> bool:
        return item_index in self._rows

    def add(self, job: LatentJob, latents: "torch.Tensor", flipped: Optional["torch.Tensor"]) -> None:
        rows = self._pending.setdefault(job.bucket, [])
        self._rows[job.item_index] = (job.bucket, len(rows))
        rows.append((latents, flipped))

    def finish(self, device: Any, dtype: Any) -> "LatentStore":
        """Stack each bucket's latents into one tensor on `device` (called once after caching)."""
        import torch

        for bucket, rows in self._pending.items():
            self._stacks[bucket] = torch.stack([r[0] for r in rows]).to(device=device, dtype=dtype)
            if all(r[1] is not None for r in rows):
                self._flipped[bucket] = torch.stack([r[1] for r in rows]).to(device=device, dtype=dtype)
            else:
                self._flipped[bucket] = None
        self._pending = {}
        return self

    def gather(self, item_indices: Sequence[int], flips: Sequence[bool]) -> "torch.Tensor":
        """(B, 4, h, w) for one batch (all items share a bucket); mirrored where `flips`."""
        import torch

        bucket = self._rows[item_indices[0]][0]
        stack = self._stacks[bucket]
        rows = to_device(torch.tensor([self._rows[i][1] for i in item_indices]), stack.device)
        out = stack.index_select(0, rows)
        if any(flips):
            mirrored = self._flipped[bucket]
            if mirrored is None:
                raise RuntimeError(f"no flipped latents cached for bucket {bucket}")
            mask = to_device(torch.tensor(list(flips)), stack.device).view(-1, 1, 1, 1)
            out = torch.where(mask, mirrored.index_select(0, rows), out)
        return out

    @property
    def nbytes(self) -> int:
        tensors = list(self._stacks.values()) + [t for t in self._flipped.values() if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)


def _noise_seed(key: dict) -> int:
    """Seed for a latent's sampling noise, fixed by what the latent depends on."""
    text = json.dumps({k: v for k, v in key.items() if k != "image"}, sort_keys=True) + key["image"]["sha256"]
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def _load_job_pixels(job: LatentJob) -> "torch.Tensor":
    import random

    from engine.data.images import load_training_image

    loaded = load_training_image(job.image, job.bucket, rng=random.Random(0), resized=job.resized,
                                 interpolation=job.interpolation)
    if loaded.geometry.crop_top_left != tuple(job.crop_top_left):
        raise RuntimeError(f"{job.image}: crop {loaded.geometry.crop_top_left} differs from the plan "
                           f"{job.crop_top_left}")
    return pixels_to_tensor(loaded.pixels)


class _ChunkPixels:
    """A torch Dataset: chunk k -> the stacked pixels of its images (mirrors after originals),
    so DataLoader workers decode and resize while the VAE encodes the previous chunk."""

    def __init__(self, chunks: list[list[LatentJob]]) -> None:
        self.chunks = chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> "torch.Tensor":
        import torch

        images = [_load_job_pixels(job) for job in self.chunks[k]]
        mirrors = [torch.flip(image, dims=[2]) for job, image in zip(self.chunks[k], images) if job.flip]
        return torch.stack(images + mirrors)


def _encode_chunk(vae: Any, pixels: "torch.Tensor", jobs: list[LatentJob], keys: list[dict]
                  ) -> list[tuple["torch.Tensor", Optional["torch.Tensor"]]]:
    """(latents, mirrored latents or None) per job; each image's noise seeded from its key."""
    import torch

    from engine.model.encode import vae_encode

    seeds = [_noise_seed(key) for key in keys]
    seeds += [seed + 1 for job, seed in zip(jobs, seeds) if job.flip]
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    latents = vae_encode(vae, pixels, generators).float().cpu()
    mirrored = iter(latents[len(jobs):])
    return [(latents[n], next(mirrored) if job.flip else None) for n, job in enumerate(jobs)]


def cache_latents(jobs: Sequence[LatentJob], vae: Any, *, to_disk: bool, device: Any, dtype: Any,
                  progress: Progress, vae_batch_size: int = 4, num_workers: int = 0) -> tuple[LatentStore, bool]:
    """Latents for every job, from disk where a matching file exists, else from the VAE.

    Returns the store (stacked on `device` in `dtype`) and whether it is complete (False when
    a stop was requested part-way; the files written so far stay valid for the next run).
    Images are decoded in `num_workers` DataLoader workers while the VAE runs.
    """
    from torch.utils.data import DataLoader

    vae_id = module_fingerprint(vae)
    vae_dtype = dtype_name(vae.dtype)
    store = LatentStore()
    progress.total = len(jobs)
    progress.start()
    todo: list[tuple[LatentJob, dict]] = []
    for job in jobs:
        key = latent_key(ImageIdentity.of(job.image), bucket=job.bucket, resized=job.resized,
                         crop_top_left=job.crop_top_left, flip=job.flip, vae_id=vae_id, dtype=vae_dtype,
                         interpolation=job.interpolation)
        path = latent_cache_path(job.image, job.bucket)
        if to_disk and latent_key_matches(read_cache_key(path), key, job.image):
            names = ["latents", "latents_flipped"] if job.flip else ["latents"]
            tensors = read_tensors(path, names)
            if tensors is not None:
                store.add(job, tensors["latents"], tensors.get("latents_flipped"))
                progress.advance()
                continue
        todo.append((job, key))

    by_bucket: dict[tuple[int, int], list[tuple[LatentJob, dict]]] = {}
    for job, key in todo:
        by_bucket.setdefault(job.bucket, []).append((job, key))
    chunks = [group[start:start + vae_batch_size]
              for group in by_bucket.values() for start in range(0, len(group), vae_batch_size)]
    loader = DataLoader(_ChunkPixels([[job for job, _ in chunk] for chunk in chunks]), batch_size=None,
                        num_workers=num_workers if len(chunks) > 1 else 0)
    for chunk, pixels in zip(chunks, loader):
        if progress.stop_requested:
            return store.finish(device, dtype), False
        # the image's bytes go into the key (a later touch or copy still matches) and into the
        # noise seed (memory and disk caching then draw the same latent)
        chunk = [(job, {**key, "image": {**key["image"], "sha256": file_sha256(job.image)}})
                 for job, key in chunk]
        results = _encode_chunk(vae, pixels, [job for job, _ in chunk], [key for _, key in chunk])
        for (job, key), (latents, flipped) in zip(chunk, results):
            if to_disk:
                tensors = {"latents": latents}
                if flipped is not None:
                    tensors["latents_flipped"] = flipped
                write_cache(latent_cache_path(job.image, job.bucket), tensors, key)
            store.add(job, latents, flipped)
        progress.advance(len(chunk))
    if to_disk:
        progress.log(f"latents: {len(jobs) - len(todo)} of {len(jobs)} read from the disk cache, "
                     f"{len(todo)} encoded")
    return store.finish(device, dtype), True


# ---- text-encoder outputs --------------------------------------------------------------------

class TextStore:
    """Cached (hidden, pooled) per distinct caption, stacked once on the device."""

    def __init__(self, hidden: "torch.Tensor", pooled: "torch.Tensor", rows: dict[int, int]) -> None:
        self.hidden, self.pooled, self._rows = hidden, pooled, rows

    def __contains__(self, item_index: int) -> bool:
        return item_index in self._rows

    def gather(self, item_indices: Sequence[int]) -> tuple["torch.Tensor", "torch.Tensor"]:
        import torch

        rows = to_device(torch.tensor([self._rows[i] for i in item_indices]), self.hidden.device)
        return self.hidden.index_select(0, rows), self.pooled.index_select(0, rows)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.hidden, self.pooled))


def text_encoders_identity(model: SdxlModel) -> str:
    parts = [module_fingerprint(model.text_encoder1), module_fingerprint(model.text_encoder2)]
    for tokenizer in (model.tokenizer1, model.tokenizer2):
        parts.append(f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.pad_token}")
    if getattr(model, "max_token_length", None):  # long captions encode differently (long_prompts.py)
        parts.append(f"max_token_length={model.max_token_length}")
    if getattr(model, "weighted_captions", False):
        parts.append("weighted_captions")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def cache_text_outputs(captions: dict[int, str], images: dict[int, Path], model: SdxlModel, *, to_disk: bool,
                       device: Any, dtype: Any, progress: Progress, batch_size: int = 16
                       ) -> tuple[Optional[TextStore], bool]:
    """Text-encoder outputs for each item's (fixed) caption; items sharing a caption share a row.

    `captions` and `images` map item index -> caption / image path. With `to_disk`, each
    image gets a file keyed by its caption and the encoders' identity.
    """
    import torch

    from engine.model.encode import encode_captions

    encoders_id = text_encoders_identity(model)
    stored_dtype = dtype_name(dtype)
    distinct = list(dict.fromkeys(captions.values()))
    row_of = {caption: n for n, caption in enumerate(distinct)}
    found: dict[str, tuple["torch.Tensor", "torch.Tensor"]] = {}
    up_to_date: set[int] = set()  # items whose file already holds this caption's outputs
    progress.total = len(distinct)
    progress.start()
    if to_disk:
        for index, caption in captions.items():
            key = text_key(caption, encoders_id=encoders_id, dtype=stored_dtype)
            path = text_cache_path(images[index])
            if read_cache_key(path) != key:
                continue
            up_to_date.add(index)
            if caption not in found:
                tensors = read_tensors(path, ["hidden", "pooled"])
                if tensors is not None:
                    found[caption] = (tensors["hidden"], tensors["pooled"])
    missing = [c for c in distinct if c not in found]
    progress.advance(len(distinct) - len(missing))
    for start in range(0, len(missing), batch_size):
        if progress.stop_requested:
            return None, False
        chunk = missing[start:start + batch_size]
        with torch.no_grad():
            hidden, pooled = encode_captions(model, chunk, device, dtype=dtype)
        for n, caption in enumerate(chunk):
            found[caption] = (hidden[n].cpu(), pooled[n].cpu())
        progress.advance(len(chunk))
    if to_disk:
        for index, caption in captions.items():
            if index not in up_to_date:
                hidden, pooled = found[caption]
                key = text_key(caption, encoders_id=encoders_id, dtype=stored_dtype)
                write_cache(text_cache_path(images[index]), {"hidden": hidden, "pooled": pooled}, key)
    if not distinct:
        return None, True
    hidden = torch.stack([found[c][0] for c in distinct]).to(device=device, dtype=dtype)
    pooled = torch.stack([found[c][1] for c in distinct]).to(device=device, dtype=dtype)
    if to_disk:
        progress.log(f"text-encoder outputs: {len(distinct) - len(missing)} of {len(distinct)} captions read "
                     f"from the disk cache, {len(missing)} encoded")
    return TextStore(hidden, pooled, {i: row_of[c] for i, c in captions.items()}), True
