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
    """Optimizer steps per epoch: a last partial accumulation still makes a step (as sd-scripts)."""
    return math.ceil(batches_per_epoch(scanned, world_size) / gradient_accumulation_steps)


DEFAULT_MAX_TRAIN_STEPS = 1600  # sd-scripts' default when neither limit is given



def training_length(steps_per_epoch: int, max_train_steps: Optional[int],
                    max_train_epochs: Optional[int]) -> tuple[int, int, str]:
    """(total steps, epochs, what limits the run). max_train_steps wins when both are set."""
    if max_train_steps is not None:
        steps, limit = max_train_steps, "max_train_steps"
    elif max_train_epochs is not None:
        if steps_per_epoch == 0:
            return 0, max_train_epochs, "max_train_epochs"
        return max_train_epochs * steps_per_epoch, max_train_epochs, "max_train_epochs"
    else:
        steps, limit = DEFAULT_MAX_TRAIN_STEPS, "default"
    epochs = math.ceil(steps / steps_per_epoch) if steps_per_epoch else 0
    return steps, epochs, limit
