"""The batches of one epoch: deterministic from (seed, epoch), split across ranks, resumable.

Each image appears `num_repeats` times per epoch. Batches never mix buckets or datasets
(batch size is per dataset, and a batch's images must share a size). Within each
(dataset, bucket) group the entries are shuffled, cut into batches (the last one may be
short, as sd-scripts), and then the list of all batches is shuffled. With several ranks,
batch i goes to rank i % world_size and the tail that would give ranks unequal counts is left
out of that epoch (a different tail each epoch, since the order changes), so every rank takes
the same number of steps and no two ranks see the same batch.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterator, Optional

from engine.data.buckets import Size
from engine.data.scan import ScannedDataset


@dataclass(frozen=True)
class Batch:
    """One batch: images of one dataset, all resized and cropped to `bucket` (width, height) in pixels."""
    dataset_index: int
    bucket: Size
    items: tuple[int, ...]  # indices into ScannedDataset.items (an image may appear twice)


def _groups(scanned: ScannedDataset) -> dict[tuple[int, Size], list[int]]:
    groups: dict[tuple[int, Size], list[int]] = {}
    for index, item in enumerate(scanned.items):
        groups.setdefault((item.dataset_index, item.bucket), []).extend([index] * item.num_repeats)
    return dict(sorted(groups.items()))


def epoch_rng(seed: int, epoch: int, purpose: str = "batches") -> random.Random:
    """A generator fixed by (seed, epoch, purpose), independent of any global state."""
    return random.Random(f"{purpose}:{seed}:{epoch}")


def epoch_batches(scanned: ScannedDataset, seed: int, epoch: int) -> list[Batch]:
    """All batches of `epoch` (any int; 1-based by convention) in training order."""
    rng = epoch_rng(seed, epoch)
    batches: list[Batch] = []
    for (dataset_index, bucket), entries in _groups(scanned).items():
        entries = entries[:]
        rng.shuffle(entries)
        size = scanned.dataset(dataset_index).batch_size
        for start in range(0, len(entries), size):
            batches.append(Batch(dataset_index, bucket, tuple(entries[start:start + size])))
    rng.shuffle(batches)
    return batches


def batches_per_epoch(scanned: ScannedDataset, world_size: int = 1) -> int:
    """Batches each rank takes per epoch."""
    total = 0
    for (dataset_index, _), entries in _groups(scanned).items():
        total += math.ceil(len(entries) / scanned.dataset(dataset_index).batch_size)
    return total // world_size


def rank_batches(batches: list[Batch], rank: int = 0, world_size: int = 1) -> list[Batch]:
    """This rank's share of an epoch's batches: every `world_size`-th from `rank`, dropping the remainder so every
    rank takes as many steps. Raises ValueError when `rank` is outside `world_size`."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def iter_epoch(scanned: ScannedDataset, seed: int, epoch: int, *, rank: int = 0, world_size: int = 1,
               start_batch: int = 0) -> Iterator[Batch]:
    """This rank's batches of `epoch`, skipping the first `start_batch` of them (resume mid-epoch:
    the order depends only on seed and epoch, so the rest comes out exactly as before)."""
    mine = rank_batches(epoch_batches(scanned, seed, epoch), rank, world_size)
    yield from mine[start_batch:]


def steps_per_epoch(scanned: ScannedDataset, gradient_accumulation_steps: int = 1, world_size: int = 1) -> int:
    """Optimizer steps per epoch (`training_length`'s count for this dataset)."""
    return training_length(batches_per_epoch(scanned, world_size), gradient_accumulation_steps).steps_per_epoch


DEFAULT_MAX_TRAIN_STEPS = 1600  # sd-scripts' default when neither limit is given


@dataclass(frozen=True)
class TrainingLength:
    """How long a run is, in optimizer steps and epochs; `limit` says which option decided it
    ("max_train_steps", "max_train_epochs" or "default")."""

    steps_per_epoch: int
    total_steps: int
    epochs: int
    limit: str


def training_length(batches_per_epoch: int, gradient_accumulation_steps: int = 1,
                    max_train_steps: Optional[int] = None,
                    max_train_epochs: Optional[int] = None) -> TrainingLength:
    """The one count of steps per epoch and total steps, for the run, the plan and the data.

    A last partial accumulation group still makes a step (as sd-scripts' train_network.py:
    ceil(batches / gradient_accumulation_steps)); max_train_steps wins when both limits are set;
    with neither, sd-scripts' default of 1600 steps."""
    per_epoch = math.ceil(batches_per_epoch / gradient_accumulation_steps)
    if max_train_steps is not None:
        steps, limit = max_train_steps, "max_train_steps"
    elif max_train_epochs is not None:
        return TrainingLength(per_epoch, max_train_epochs * per_epoch, max_train_epochs, "max_train_epochs")
    else:
        steps, limit = DEFAULT_MAX_TRAIN_STEPS, "default"
    epochs = math.ceil(steps / per_epoch) if per_epoch else 0
    return TrainingLength(per_epoch, steps, epochs, limit)
