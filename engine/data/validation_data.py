"""The validation loss's data: the images `validation_split` holds out of training
(engine/data/validation_split.py), batched like the training data and cached the same way.

As in sd-scripts' validation dataset, each held-out image is taken once (no repeats, no
regularisation images), in the dataset's batch size and buckets. Every evaluation reads the same
batches: they are the batches of epoch 0 for seed `cfg.training.seed`, and each sample's
augmentations and caption processing come from generators named by that position
(training_data.sample_rng), so a flip or a caption shuffle is the same at every evaluation.
Every process evaluates all of them (rank 0 of 1): the loss is then the same on each, and the
training batches' split over processes is untouched.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # pragma: no cover
    from engine.config.schema import RunConfig
    from engine.data.training_data import TrainingData
    from engine.model.load import SdxlModel


def validation_data(cfg: RunConfig, training: TrainingData, model: SdxlModel, *, emit, control, rank: int = 0,
                    world_size: int = 1) -> Optional[TrainingData]:
    """The held-out images' data (latents / text outputs cached when the training ones are), or None
    when nothing is held out. `interrupted` is set when a stop came during caching. Caching shares
    the work over processes as the training data's does (`rank`, `world_size`)."""
    from engine.data.cache_fill import fill_caches
    from engine.data.training_data import TrainingData

    held = training.scanned.validation_set()
    if held is None:
        return None
    data = TrainingData(scanned=held, seed=training.seed, device=training.device, dtype=training.dtype,
                        num_workers=training.num_workers, max_train_steps=training.max_train_steps)
    if not fill_caches(cfg, data, model, emit=emit, control=control, rank=rank, world_size=world_size):
        data.interrupted = True
    return data


def validation_seed(scanned_config) -> Optional[int]:
    """The first dataset's `validation_seed` that is set (sd-scripts has one, --validation_seed), else None."""
    return next((d.validation_seed for d in scanned_config.datasets if d.validation_seed is not None), None)
