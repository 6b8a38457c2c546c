"""sd-scripts' `initial_epoch`, `initial_step` and `skip_until_initial_step`: start a run part-way.

As in sd-scripts' train_network.py:
  - initial_step = `initial_step`, else (`initial_epoch` - 1) x optimizer steps per epoch;
    initial_step wins, and it must be below the run's total steps;
  - with `skip_until_initial_step`: the data of those steps is skipped (the per-epoch order is
    fixed by the seed, so the same batches are left out) and the step count continues from
    initial_step; the learning-rate schedule starts from its beginning unless a state is resumed;
  - without it: nothing is skipped and the step count starts at 0; only the epoch count starts
    at initial_step // steps per epoch, so a run limited by epochs ends that many epochs sooner.
Where sd-scripts mixes batch and step units with gradient accumulation (it multiplies
initial_step by the accumulation before dividing by steps per epoch), steps are used here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from engine.errors import ConfigError


@dataclass(frozen=True)
class InitialStart:
    """Where a run started part-way begins (sd-scripts' initial_step / initial_epoch): `global_step` the
    step count it continues from, `epoch` and `batches_done_in_epoch` the data position, `loop_steps`
    the optimizer-step count the loop stops at, `note` the log line saying which.
    """
    global_step: int
    epoch: int  # 0-based epoch the first batch belongs to
    batches_done_in_epoch: int  # batches of that epoch skipped
    loop_steps: int  # the step count at which the loop stops
    note: str


def initial_start(training: Any, *, steps_per_epoch: int, batches_per_epoch: int, total_steps: int,
                  total_epochs: int) -> Optional[InitialStart]:
    """Where the loop starts for `training` (a TrainingSection), or None when neither option is set.

    Raises ConfigError (key initial_step) when the start is not below `total_steps`."""
    if training.initial_step is None and training.initial_epoch is None:
        return None
    if training.initial_step is not None:
        initial = training.initial_step
    else:
        initial = (training.initial_epoch - 1) * steps_per_epoch
    if initial >= total_steps:
        raise ConfigError(f"initial_step {initial} is not below the run's {total_steps} steps", key="initial_step",
                          hint="lower initial_step / initial_epoch or raise max_train_steps / max_train_epochs")
    epoch = initial // steps_per_epoch
    if training.skip_until_initial_step:
        within = initial - epoch * steps_per_epoch
        batches = min(within * training.gradient_accumulation_steps, batches_per_epoch)
        return InitialStart(initial, epoch, batches, total_steps,
                            f"skipping the data of the first {initial} steps; the step count continues from {initial}")
    loop_steps = min(total_steps, (total_epochs - epoch) * steps_per_epoch)
    return InitialStart(0, epoch, 0, loop_steps,
                        f"counting epochs from {epoch + 1} (initial step {initial}, no data skipped, as sd-scripts "
                        f"does without skip_until_initial_step): {loop_steps} steps")
