"""sd-scripts' `validation_split`: part of each training subset's images is held out of training.

sd-scripts (`library/train_util.py: split_train_val`) shuffles a subset's sorted image list with
`random.seed(validation_seed)` (or the run's random state when unset) and trains on the first
`ceil(n * (1 - validation_split))`; the rest is the validation set. Regularisation subsets are
never split. Here the same shuffle is made with `random.Random(validation_seed)`, or with the
run's `seed` when validation_seed is unset, so the held-out images are the same on every run.
(sd-scripts shuffles before unreadable images are dropped; here after, so with
skip_bad_images the two may hold out different images.) The loss on the held-out images is
issue 14's validation loss; this module only keeps them out of training.
"""
from __future__ import annotations

import math
import random
from typing import Optional, Sequence, TypeVar

T = TypeVar("T")


def split_for_validation(entries: Sequence[T], validation_split: float,
                         seed: Optional[int]) -> tuple[list[T], list[T]]:
    """(trained, held out) from a subset's entries in sorted-path order. A split of 0 keeps all."""
    if validation_split <= 0 or not entries:
        return list(entries), []
    shuffled = list(entries)
    random.Random(seed).shuffle(shuffled)
    keep = math.ceil(len(shuffled) * (1 - validation_split))
    return shuffled[:keep], shuffled[keep:]
