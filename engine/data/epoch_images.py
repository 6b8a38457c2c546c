"""Loading uncached images for one epoch in DataLoader workers: batch k's pixels and time ids,
each sample's crop, flip and colour shift drawn from the generator its ImageTask names, so the
result does not depend on which worker loads it.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.data.latent_cache import pixels_to_tensor


@dataclass(frozen=True)
class ImageTask:
    """One uncached image of a batch: its file, bucket and resized size (pixels, (width, height)), its
    augmentations, the resize interpolation, and `rng_name`, the seed string of its own random.Random.
    """
    path: Path
    bucket: tuple[int, int]
    resized: tuple[int, int]
    random_crop: bool
    flip_aug: bool
    color_aug: bool
    interpolation: Optional[str]
    rng_name: str


class EpochImages:
    """A torch Dataset whose item k is the pixels and time ids of the k-th batch."""

    def __init__(self, tasks: list[list[ImageTask]]) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, k: int) -> dict:
        import torch

        from engine.data.images import load_training_image

        pixels, time_ids = [], []
        for task in self.tasks[k]:
            loaded = load_training_image(task.path, task.bucket, rng=random.Random(task.rng_name),
                                         resized=task.resized, random_crop=task.random_crop,
                                         flip_aug=task.flip_aug, color_aug=task.color_aug,
                                         interpolation=task.interpolation)
            pixels.append(pixels_to_tensor(loaded.pixels))
            time_ids.append(loaded.time_ids())
        return {"pixels": torch.stack(pixels), "time_ids": torch.tensor(time_ids, dtype=torch.float32)}
