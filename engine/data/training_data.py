"""From the dataset config and the loaded model to the batches the training loop consumes.

`prepare_training_data` scans the dataset, caches latents and/or text-encoder outputs as the
config asks (engine/data/latent_cache.py, text_cache.py), then puts the VAE and text encoders where the loop needs
them: off the device once their outputs are cached (and the encoders are not trained), on it
otherwise. `TrainingData.epoch_batches(epoch)` yields `Batch`es, deterministic for a seed and
an epoch. `epoch` is 0-based (epochs completed before this one, as the loop counts); caption
processing sees `epoch + 1`, as sd-scripts counts epochs for caption_dropout_every_n_epochs.

Every random choice for one sample (crop offset, flip, colour shift, caption shuffle/dropout)
comes from a generator named by (seed, epoch, rank, batch position, slot), so the result does
not depend on DataLoader workers, on caching, or on where a resumed run restarts: a cached
latent is flipped exactly when the uncached image would have been.
"""
from __future__ import annotations

import gc
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Optional

from engine.data import batching
from engine.data.batching import training_length
from engine.data.buckets import crop_geometry
from engine.data.cache_fill import fill_caches, place_module
from engine.data.captions import CaptionOptions, process_caption
from engine.data.dataset_config import SubsetSpec
from engine.data.epoch_images import EpochImages, ImageTask
from engine.data.latent_cache import LatentStore
from engine.data.scan import ImageItem, ScannedDataset
from engine.data.text_cache import TextStore
from engine.data.transfer import to_device
from engine.errors import ConfigError
from engine.events.types import SCANNING_DATASET, Phase, Warning_

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from engine.config.schema import RunConfig
    from engine.model.load import SdxlModel


@dataclass(frozen=True)
class Batch:
    """One batch: every image shares a bucket. Tensors are on the training device."""
    latents: Optional["torch.Tensor"]  # (B, 4, h, w) scaled, in the training dtype; None when not cached
    pixels: Optional["torch.Tensor"]  # (B, 3, H, W) float32 in [-1, 1]; None when latents are cached
    captions: list[str]  # after caption processing
    text_hidden: Optional["torch.Tensor"]  # (B, 77, w1 + w2) when text outputs are cached
    text_pooled: Optional["torch.Tensor"]  # (B, proj) when text outputs are cached
    time_ids: "torch.Tensor"  # (B, 6) float32: original h, w, crop top, left, target h, w
    loss_weights: "torch.Tensor"  # (B,) float32: 1, or prior_loss_weight for regularisation images
    paths: list[str]


def sample_rng(seed: int, epoch: int, rank: int, position: int, slot: int, purpose: str) -> random.Random:
    """A generator fixed by its arguments (no global state), so augmentations and caption shuffles
    are the same on a resume as in the uninterrupted run."""
    return random.Random(f"{purpose}:{seed}:{epoch}:{rank}:{position}:{slot}")


# ---- the data ------------------------------------------------------------------------------

@dataclass
class TrainingData:
    """The loop's data: the scanned dataset, cached latents / text outputs where configured, and the
    batches of each epoch for this rank (`epoch_batches`)."""
    scanned: ScannedDataset
    seed: int
    device: Any
    dtype: Any
    prior_loss_weight: float = 1.0
    rank: int = 0
    world_size: int = 1
    num_workers: int = 0
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 0
    latents: Optional[LatentStore] = None
    text: Optional[TextStore] = None
    interrupted: bool = False  # a stop was requested while caching; the data is incomplete
    validation: Optional["TrainingData"] = None  # the validation_split images (engine/data/validation_data.py)
    _subsets: dict[int, SubsetSpec] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._subsets = {s.index: s for s in self.scanned.config.all_subsets()}

    # figures for the plan, events and LoRA metadata
    @property
    def batches_per_epoch(self) -> int:
        """Batches this rank takes per epoch (engine.data.batching.batches_per_epoch)."""
        return batching.batches_per_epoch(self.scanned, self.world_size)

    @property
    def num_train_images(self) -> int:
        """Training images × repeats per epoch (sd-scripts' ss_num_train_images)."""
        return self.scanned.num_train_images

    @property
    def num_reg_images(self) -> int:
        """Regularisation images (sd-scripts' ss_num_reg_images)."""
        return self.scanned.num_reg_images

    @property
    def manifest_hash(self) -> str:
        """ScannedDataset.manifest_hash: equal hashes mean the same training data (resume checks it)."""
        return self.scanned.manifest_hash()

    @property
    def bucket_info(self) -> dict:
        """sd-scripts' ss_bucket_info: buckets (pixels) and their image counts."""
        from engine.data.metadata_figures import bucket_info

        return bucket_info(self.scanned)

    @property
    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """sd-scripts' ss_tag_frequency: caption tags counted per image folder."""
        from engine.data.metadata_figures import tag_frequency

        return tag_frequency(self.scanned)

    # batches
    def epoch_batches(self, epoch: int, skip: int = 0) -> Iterator[Batch]:
        """This rank's batches of `epoch` (0-based), the first `skip` left out (resume)."""
        if self.interrupted:
            raise RuntimeError("caching was stopped part-way; this training data is incomplete")
        plan = list(batching.iter_epoch(self.scanned, self.seed, epoch, rank=self.rank,
                                        world_size=self.world_size, start_batch=skip))
        positions = range(skip, skip + len(plan))
        loaded = iter(self._image_loader(epoch, plan, positions)) if self.latents is None else None
        for position, planned in zip(positions, plan):
            images = next(loaded) if loaded is not None else None
            yield self._batch(epoch, position, planned, images)

    def _caption(self, item: ImageItem, epoch: int, position: int, slot: int) -> str:
        options = CaptionOptions.from_subset(self._subsets[item.subset_index])
        rng = sample_rng(self.seed, epoch, self.rank, position, slot, "caption")
        global_batch = epoch * self.batches_per_epoch + position
        return process_caption(item.caption, options, rng, epoch=epoch + 1,
                               step=global_batch // self.gradient_accumulation_steps,
                               max_train_steps=self.max_train_steps)

    def _batch(self, epoch: int, position: int, planned: batching.Batch, images: Optional[dict]) -> Batch:
        import torch

        items = [self.scanned.items[i] for i in planned.items]
        captions = [self._caption(item, epoch, position, slot) for slot, item in enumerate(items)]
        if self.latents is not None:
            latents, time_ids = self._cached_latents(epoch, position, planned.items, items)
            pixels = None
        else:
            assert images is not None
            latents = None
            pixels = images["pixels"].to(self.device, non_blocking=True)
            time_ids = images["time_ids"]
        hidden = pooled = None
        if self.text is not None:
            hidden, pooled = self.text.gather(planned.items)
        weights = torch.tensor([self.prior_loss_weight if item.is_reg else 1.0 for item in items],
                               dtype=torch.float32)
        return Batch(latents=latents, pixels=pixels, captions=captions, text_hidden=hidden,
                     text_pooled=pooled, time_ids=to_device(time_ids, self.device),
                     loss_weights=to_device(weights, self.device), paths=[str(item.path) for item in items])

    def _cached_latents(self, epoch: int, position: int, indices: tuple[int, ...], items: list[ImageItem]):
        import torch

        assert self.latents is not None
        flips, time_ids = [], []
        for slot, item in enumerate(items):
            subset = self._subsets[item.subset_index]
            rng = sample_rng(self.seed, epoch, self.rank, position, slot, "image")
            # the same draw load_training_image makes, so cached and uncached runs flip alike
            flipped = bool(subset.flip_aug and rng.random() < 0.5)
            geometry = crop_geometry(item.size, item.bucket, resized=item.resized)
            flips.append(flipped)
            time_ids.append((geometry.flipped() if flipped else geometry).time_ids())
        latents = self.latents.gather(indices, flips)
        return latents, torch.tensor(time_ids, dtype=torch.float32)

    def _image_loader(self, epoch: int, plan: list[batching.Batch], positions: range):
        import torch
        from torch.utils.data import DataLoader

        tasks = []
        for position, planned in zip(positions, plan):
            batch_tasks = []
            for slot, index in enumerate(planned.items):
                item = self.scanned.items[index]
                subset = self._subsets[item.subset_index]
                batch_tasks.append(ImageTask(
                    item.path, item.bucket, item.resized, subset.random_crop, subset.flip_aug, subset.color_aug,
                    subset.resize_interpolation,
                    f"image:{self.seed}:{epoch}:{self.rank}:{position}:{slot}"))
            tasks.append(batch_tasks)
        on_cuda = torch.device(self.device).type == "cuda"
        # A DataLoader iterator draws its base seed from the global torch RNG unless given a
        # generator; that draw would fall at a different point of the stream in a resumed run
        # (whose iterator starts mid-epoch) and shift every later noise sample. Its own
        # generator keeps the training stream untouched (the images use named generators).
        loader_rng = torch.Generator().manual_seed(hash((self.seed, epoch, self.rank)) & 0x7FFFFFFF)
        return DataLoader(EpochImages(tasks), batch_size=None, shuffle=False, num_workers=self.num_workers,
                          pin_memory=on_cuda, generator=loader_rng)


# ---- preparing -------------------------------------------------------------------------------

def _refuse_unsupported(scanned: ScannedDataset) -> None:
    """Dataset keys that parse (sd-scripts files carry them) but that no batch can honour yet:
    training without them silently would be a different run than the user asked for."""
    for subset in scanned.config.all_subsets():
        if subset.alpha_mask:
            raise ConfigError(f"alpha_mask = true (subset {subset.index}) is not supported yet: the loss "
                              "would ignore the transparency", key="alpha_mask",
                              hint="remove alpha_mask, or flatten the images onto a background")
    for dataset in scanned.config.datasets:
        if dataset.network_multiplier != 1.0:
            raise ConfigError(f"network_multiplier = {dataset.network_multiplier} (datasets[{dataset.index}]) is "
                              "not supported yet: every dataset trains the LoRA at strength 1",
                              key="network_multiplier", hint="remove network_multiplier from the dataset config")


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gc.collect()  # drop lingering references first, so the cached blocks can be returned
        torch.cuda.empty_cache()


def prepare_training_data(cfg: RunConfig, model: SdxlModel, *, emit, device, dtype, control, rank: int = 0,
                          world_size: int = 1, scanned: ScannedDataset) -> TrainingData:
    """Cache the scanned dataset as configured, and place the VAE / text encoders for the loop.

    Afterwards the VAE is on `device` only when latents are not cached, and the text
    encoders only when their outputs are not cached or they are trained. A stop request
    during caching returns data with `interrupted = True` (what was written to disk stays).
    """
    import time

    caching = cfg.caching
    emit(Phase(time=time.time(), name=SCANNING_DATASET))
    _refuse_unsupported(scanned)
    for message in scanned.warnings:
        emit(Warning_(time=time.time(), message=message))

    data = TrainingData(scanned=scanned, seed=cfg.training.seed, device=device, dtype=dtype,
                        prior_loss_weight=cfg.dataset.prior_loss_weight, rank=rank, world_size=world_size,
                        num_workers=cfg.dataset.max_data_loader_n_workers,
                        gradient_accumulation_steps=cfg.training.gradient_accumulation_steps)
    data.max_train_steps = _planned_steps(cfg, data)

    cache_latents_on = caching.cache_latents or caching.cache_latents_to_disk
    cache_text_on = caching.cache_text_encoder_outputs or caching.cache_text_encoder_outputs_to_disk
    if not fill_caches(cfg, data, model, emit=emit, control=control, rank=rank, world_size=world_size):
        data.interrupted = True
        return data
    data.validation = validation_data(cfg, data, model, emit=emit, control=control, rank=rank, world_size=world_size)
    if data.validation is not None and data.validation.interrupted:
        data.interrupted = True
        return data

    place_module(model.vae, "cpu" if cache_latents_on else device)
    encoders_home = "cpu" if cache_text_on and cfg.network.network_train_unet_only else device
    place_module(model.text_encoder1, encoders_home)
    place_module(model.text_encoder2, encoders_home)
    _free_device_memory()
    return data


def _planned_steps(cfg: RunConfig, data: TrainingData) -> int:
    """Total optimizer steps, counted as the plan counts them (token warm-up may be a fraction)."""
    return training_length(data.batches_per_epoch, data.gradient_accumulation_steps, cfg.training.max_train_steps,
                           cfg.training.max_train_epochs).total_steps


def validation_data(cfg: RunConfig, training: TrainingData, model: SdxlModel, *, emit, control, rank: int = 0,
                    world_size: int = 1) -> Optional[TrainingData]:
    """The held-out images' data (engine/data/validation_data.py says how it is chosen and batched),
    latents / text outputs cached when the training ones are; None when nothing is held out.
    `interrupted` is set when a stop came during caching. Caching shares the work over processes
    as the training data's does (`rank`, `world_size`)."""
    held = training.scanned.validation_set()
    if held is None:
        return None
    data = TrainingData(scanned=held, seed=training.seed, device=training.device, dtype=training.dtype,
                        num_workers=training.num_workers, max_train_steps=training.max_train_steps)
    if not fill_caches(cfg, data, model, emit=emit, control=control, rank=rank, world_size=world_size):
        data.interrupted = True
    return data
