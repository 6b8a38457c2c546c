"""Latent caching: each image's VAE latents, from its disk cache file when the key matches
(engine/data/cache_files.py), else encoded, and stacked per bucket on the device (LatentStore).

A latent is one sample of the VAE's latent distribution (as sd-scripts caches it); its noise
is seeded from the key, so the same image and settings give the same latent on every run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from engine.data.cache_files import (
    ImageIdentity,
    dtype_name,
    file_sha256,
    latent_cache_path,
    latent_key,
    latent_key_matches,
    module_fingerprint,
    read_cache_key,
    read_tensors,
    write_cache,
)
from engine.data.progress import Progress
from engine.data.transfer import to_device

if TYPE_CHECKING:  # pragma: no cover
    import torch


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
        """Queue one image's latents (4, H/8, W/8) and its mirrored ones (or None) under its bucket;
        `finish` stacks them.
        """
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
        """Bytes held by the stacked latents (flipped ones included); 0 before `finish`."""
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
    import torch
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
    # A generator of its own: a DataLoader iterator draws its base seed from the one it is given,
    # and caching must not move the global stream the LoRA's init and the training noise come from
    # (so the UNet may load, and the LoRA be built, before or after the caches: model_setup.py).
    loader = DataLoader(_ChunkPixels([[job for job, _ in chunk] for chunk in chunks]), batch_size=None,
                        num_workers=num_workers if len(chunks) > 1 else 0, generator=torch.Generator())
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
