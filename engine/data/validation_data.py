"""The validation loss's data (built by engine/data/training_data.py `validation_data`): the images
`validation_split` holds out of training (engine/data/validation_split.py), batched like the
training data and cached the same way.

As in sd-scripts' validation dataset, each held-out image is taken once (no repeats, no
regularisation images), in the dataset's batch size and buckets. Every evaluation reads the same
batches: they are the batches of epoch 0 for seed `cfg.training.seed`, and each sample's
augmentations and caption processing come from generators named by that position
(training_data.sample_rng), so a flip or a caption shuffle is the same at every evaluation.
Every process evaluates all of them (rank 0 of 1): the loss is then the same on each, and the
training batches' split over processes is untouched.
"""
from __future__ import annotations

from typing import Optional


def validation_seed(scanned_config) -> Optional[int]:
    """The first dataset's `validation_seed` that is set (sd-scripts has one, --validation_seed), else None."""
    return next((d.validation_seed for d in scanned_config.datasets if d.validation_seed is not None), None)
