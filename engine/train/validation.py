"""The validation loss, as sd-scripts computes it (`train_network.py`, "VALIDATION PER STEP" and
"EPOCH VALIDATION"), on the images `validation_split` holds out (engine/data/validation_data.py).

- When: every `validate_every_n_steps` optimizer steps (global_step % N == 0), and at the end of
  every epoch whose 1-based number is a multiple of `validate_every_n_epochs`, or of every epoch
  when that is unset; nothing at all without held-out images. An epoch cut short by
  max_train_steps ends with its epoch validation too, as sd-scripts' epoch loop does.
- What: the first `max_validation_steps` batches (all when unset), each at 4 fixed timesteps
  `linspace(min_timestep, max_timestep, 6)[1:-1]` (200, 400, 600, 800 by default), with the
  training loss function (loss_type, Huber schedule, min-SNR, ... and the noise options), no
  gradients, the LoRA in eval mode (dropouts off) and a schedule-free optimizer's averaged weights.
- Fixed noise: the global generators are forked (`torch.random.fork_rng`, the CUDA one of the
  training device included; python's `random` and numpy's saved and restored) and seeded with
  `validation_seed` (else `seed`), as sd-scripts' `switch_rng_state` / `restore_rng_state`; every
  evaluation draws the same noise, and the training stream continues exactly where it was.
- Fewer calls: the timesteps of one batch go through the text encoders and the UNet together,
  as one batch of up to max(batch size, 4) samples (the batch repeated once per timestep), where
  sd-scripts makes one call per timestep. Each sample still gets its own noise, and the loss is
  the same mean over batches × timesteps; the calls are what the validation time is made of.
- Reported: the plain mean over batches × timesteps. sd-scripts logs a running average whose
  list keeps growing within the first epoch, mixing evaluations; the plain mean is comparable
  from evaluation to evaluation. Tracker keys are sd-scripts' `loss/validation/step_average` and
  `loss/validation/epoch_average`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

NUM_VALIDATION_TIMESTEPS = 4  # sd-scripts' constant (its TODO: make this configurable)
SAMPLES_PER_CALL = 4  # timesteps share a call up to max(batch size, this) samples


def validation_timesteps(min_timestep: Optional[int], max_timestep: Optional[int],
                         num_train_timesteps: int) -> list[int]:
    """sd-scripts: `np.linspace(min, max, N + 2, dtype=int)[1:-1]`, min 0 and max T by default."""
    import numpy as np

    low = 0 if min_timestep is None else min_timestep
    high = num_train_timesteps if max_timestep is None else max_timestep
    return [int(t) for t in np.linspace(low, high, NUM_VALIDATION_TIMESTEPS + 2, dtype=int)[1:-1]]


@dataclass(frozen=True)
class Evaluation:
    """One validation result: `loss` (mean over batches x fixed timesteps), `batches` evaluated, and
    `seconds` of wall time it took.
    """
    loss: float  # mean over batches × timesteps
    batches: int
    seconds: float


@dataclass
class Validator:
    """Evaluates the validation loss of the current LoRA. `batch_loss(batch, noise_options,
    timesteps)` is the training loss of one batch (engine/train/loop.Trainer.batch_loss); `seen_weights` wraps a
    call so a schedule-free optimizer shows its averaged weights (optimizer_setup.in_eval_mode)."""
    data: Any  # engine.data.training_data.TrainingData of the held-out images
    network: Any
    batch_loss: Callable[[Any, Any, Any], Any]
    noise_options: Any  # engine.train.noise.NoiseOptions of the run
    timesteps: list[int]
    seed: int
    device: Any
    every_n_steps: Optional[int] = None
    every_n_epochs: Optional[int] = None
    max_batches: Optional[int] = None
    seen_weights: Callable[[Callable], Callable] = lambda fn: fn

    def due_at_step(self, step: int) -> bool:
        """True at every `validate_every_n_steps`-th optimizer step (never when unset)."""
        return bool(self.every_n_steps) and step % self.every_n_steps == 0

    def due_at_epoch(self, epoch: int) -> bool:
        """`epoch`: 1-based number of the epoch that just ended."""
        return self.every_n_epochs is None or epoch % self.every_n_epochs == 0

    def evaluate(self) -> Evaluation:
        """One evaluation; leaves every global random generator as it found it."""
        began = time.perf_counter()
        loss, batches = self.seen_weights(self._evaluate)()
        return Evaluation(loss, batches, time.perf_counter() - began)

    def _evaluate(self) -> tuple[float, int]:
        import random

        import numpy as np
        import torch

        devices = [torch.device(self.device).index or 0] if torch.device(self.device).type == "cuda" else []
        python_state, numpy_state = random.getstate(), np.random.get_state()
        was_training = self.network.training
        losses, batches, count = [], 0, 0
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(self.seed)
                random.seed(self.seed)
                self.network.eval()
                for index, batch in enumerate(self.data.epoch_batches(0)):
                    if self.max_batches is not None and index >= self.max_batches:
                        break
                    batches += 1
                    for group in timestep_groups(self.timesteps, len(batch.paths)):
                        big, timesteps = repeated(batch, group)
                        # weighted by its timesteps: the mean is over batches × timesteps, as sd-scripts'
                        losses.append(self.batch_loss(big, self.noise_options, timesteps).detach().float() * len(group))
                        count += len(group)
        finally:
            self.network.train(was_training)
            random.setstate(python_state)
            np.random.set_state(numpy_state)
        if not losses:
            return float("nan"), 0
        return float((torch.stack(losses).sum() / count).cpu()), batches


def timestep_groups(timesteps: list[int], batch_size: int) -> list[list[int]]:
    """The timesteps in groups of one call each: up to max(batch_size, SAMPLES_PER_CALL) samples."""
    per_call = max(1, SAMPLES_PER_CALL // max(1, batch_size))
    return [timesteps[i:i + per_call] for i in range(0, len(timesteps), per_call)]


def repeated(batch: Any, timesteps: list[int]):
    """(`batch` repeated once per timestep along dim 0, the `[len(timesteps) * B]` timesteps)."""
    import torch

    n = len(timesteps)

    def rep(tensor):
        return None if tensor is None else tensor.repeat(n, *([1] * (tensor.dim() - 1)))

    big = replace(batch, latents=rep(batch.latents), pixels=rep(batch.pixels), captions=list(batch.captions) * n,
                  text_hidden=rep(batch.text_hidden), text_pooled=rep(batch.text_pooled),
                  time_ids=rep(batch.time_ids), loss_weights=rep(batch.loss_weights), paths=list(batch.paths) * n)
    return big, torch.tensor([t for t in timesteps for _ in batch.paths], dtype=torch.long)


def make_validator(cfg: Any, data: Any, network: Any, noise_scheduler: Any, batch_loss: Callable,
                   device: Any, seen_weights: Callable[[Callable], Callable]) -> Optional[Validator]:
    """None when no image is held out (`data.validation` is None): then nothing is validated, as in
    sd-scripts (engine/config/rules.py warns when validation options are set)."""
    held = getattr(data, "validation", None)
    if held is None or held.batches_per_epoch == 0:
        return None
    from engine.data.validation_data import validation_seed
    from engine.train.noise import NoiseOptions

    training, logging = cfg.training, cfg.logging
    seed = validation_seed(held.scanned.config)
    return Validator(
        data=held, network=network, batch_loss=batch_loss, noise_options=NoiseOptions.from_config(training),
        timesteps=validation_timesteps(training.min_timestep, training.max_timestep,
                                       noise_scheduler.config.num_train_timesteps),
        seed=training.seed if seed is None else seed, device=device,
        every_n_steps=logging.validate_every_n_steps, every_n_epochs=logging.validate_every_n_epochs,
        max_batches=logging.max_validation_steps, seen_weights=seen_weights)
