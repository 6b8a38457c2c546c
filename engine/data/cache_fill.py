"""Filling a TrainingData's caches: latents and/or text-encoder outputs as the config asks.

Refuses (ConfigError) what would make a cached result wrong: cache_latents with random_crop or
color_aug, cache_text_encoder_outputs with a caption that changes every step. With several
ranks and disk caching, each rank writes its share of the latent files, then all read them all.
"""
from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Optional, Protocol

from engine.data.buckets import crop_geometry
from engine.data.captions import CaptionOptions, process_caption
from engine.data.latent_cache import LatentJob, LatentStore, cache_latents
from engine.data.progress import Progress
from engine.data.scan import ScannedDataset
from engine.data.text_cache import TextStore, cache_text_outputs
from engine.errors import ConfigError
from engine.events.types import CACHING_LATENTS, CACHING_TEXT

if TYPE_CHECKING:  # pragma: no cover
    from engine.config.schema import RunConfig
    from engine.model.load import SdxlModel


class CacheTarget(Protocol):
    """What fill_caches reads and fills: a TrainingData (engine/data/training_data.py), named here
    by its fields so the two modules do not import each other."""
    scanned: ScannedDataset
    device: Any
    dtype: Any
    latents: Optional[LatentStore]
    text: Optional[TextStore]


def _refuse_changing_inputs(scanned: ScannedDataset, what: str, keys: tuple[str, ...]) -> None:
    """engine/config/rules.py refuses these first; this guards callers that skipped the rules."""
    for subset in scanned.config.all_subsets():
        for key in keys:
            if getattr(subset, key):
                raise ConfigError(f"{what} cannot be used with {key} (subset {subset.index}): the input "
                                  "changes every step, so a cached result would be wrong", key=key,
                                  hint=f"turn off {key} or {what}")


def _latent_jobs(scanned: ScannedDataset) -> list[LatentJob]:
    subsets = {s.index: s for s in scanned.config.all_subsets()}
    jobs = []
    for index, item in enumerate(scanned.items):
        geometry = crop_geometry(item.size, item.bucket, resized=item.resized)
        jobs.append(LatentJob(index, item.path, item.bucket, item.resized, geometry.crop_top_left,
                              subsets[item.subset_index].flip_aug,
                              subsets[item.subset_index].resize_interpolation))
    return jobs


def _fixed_captions(scanned: ScannedDataset) -> dict[int, str]:
    """Each item's caption when it cannot change between steps (prefix/suffix applied)."""
    subsets = {s.index: s for s in scanned.config.all_subsets()}
    out = {}
    for index, item in enumerate(scanned.items):
        options = CaptionOptions.from_subset(subsets[item.subset_index])
        if not options.is_static:
            raise ConfigError(f"cache_text_encoder_outputs cannot be used with caption shuffling, dropout or "
                              f"token warm-up (subset {item.subset_index}): the caption changes every step",
                              key="cache_text_encoder_outputs", hint="turn those off, or stop caching text")
        out[index] = process_caption(item.caption, options, random.Random(0))
    return out


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def place_module(module: Any, device: Any) -> None:
    """`module.to(device)`, skipping a part the model does not have (None)."""
    if module is not None:
        module.to(device)


def _cache_latents_for(cfg: RunConfig, scanned: ScannedDataset, model: SdxlModel, *, emit, device, dtype, control,
                       rank: int, world_size: int) -> tuple[LatentStore, bool]:
    _refuse_changing_inputs(scanned, "cache_latents", ("random_crop", "color_aug"))
    to_disk = cfg.caching.cache_latents_to_disk
    jobs = _latent_jobs(scanned)
    workers = cfg.dataset.max_data_loader_n_workers
    place_module(model.vae, device)
    if to_disk and world_size > 1:  # each rank writes its share, then everyone reads them all
        share = Progress(emit, CACHING_LATENTS, 0, control)
        _, complete = cache_latents(jobs[rank::world_size], model.vae, to_disk=True, device="cpu", dtype=dtype,
                                    progress=share, num_workers=workers, vae_batch_size=cfg.caching.vae_batch_size)
        _barrier(world_size)
        if not complete:
            return LatentStore(), False
    progress = Progress(emit, CACHING_LATENTS, len(jobs), control)
    return cache_latents(jobs, model.vae, to_disk=to_disk, device=device, dtype=dtype, progress=progress,
                         num_workers=workers, vae_batch_size=cfg.caching.vae_batch_size)


def fill_caches(cfg: RunConfig, data: CacheTarget, model: SdxlModel, *, emit, control, rank: int,
                world_size: int) -> bool:
    """Cache `data`'s latents / text-encoder outputs as the config asks; False when a stop came first."""
    caching, scanned = cfg.caching, data.scanned
    if caching.cache_latents or caching.cache_latents_to_disk:
        data.latents, complete = _cache_latents_for(cfg, scanned, model, emit=emit, device=data.device,
                                                    dtype=data.dtype, control=control, rank=rank,
                                                    world_size=world_size)
        if not complete:
            return False
    if caching.cache_text_encoder_outputs or caching.cache_text_encoder_outputs_to_disk:
        captions = _fixed_captions(scanned)
        place_module(model.text_encoder1, data.device)
        place_module(model.text_encoder2, data.device)
        progress = Progress(emit, CACHING_TEXT, 0, control)
        data.text, complete = cache_text_outputs(
            captions, {i: item.path for i, item in enumerate(scanned.items)}, model,
            to_disk=caching.cache_text_encoder_outputs_to_disk, device=data.device, dtype=data.dtype,
            progress=progress)
        if not complete:
            return False
    return True
