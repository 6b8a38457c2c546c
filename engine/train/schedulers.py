"""Learning-rate schedules as multipliers of each group's base lr (one LambdaLR over all groups).

The multiplier at optimizer step s (0-based, the step about to be taken) follows diffusers'
`get_scheduler` shapes: linear warm-up from 0, then constant / linear decay / cosine /
cosine with hard restarts / polynomial decay to 0. `constant` ignores warm-up, as in
sd-scripts; use `constant_with_warmup` for a warm-up.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.config.schema import OptimizerSection

SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


def resolve_warmup_steps(lr_warmup_steps: float, total_steps: int) -> int:
    """A count, or below 1 a fraction of the total steps (as sd-scripts)."""
    if lr_warmup_steps < 1:
        return int(lr_warmup_steps * total_steps)
    return int(lr_warmup_steps)


def lr_multiplier(name: str, *, total_steps: int, warmup_steps: int = 0, num_cycles: int = 1,
                  power: float = 1.0) -> Callable[[int], float]:
    """The schedule as a function of the optimizer step."""
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown lr_scheduler '{name}'", key="optimizer.lr_scheduler", hint=", ".join(SCHEDULERS))
    if name == "constant":
        return lambda step: 1.0
    warmup = max(0, warmup_steps)
    decay_steps = max(1, total_steps - warmup)

    def progress(step: int) -> float:
        return min(1.0, max(0.0, (step - warmup) / decay_steps))

    def after_warmup(step: int) -> float:
        p = progress(step)
        if name == "constant_with_warmup":
            return 1.0
        if name == "linear":
            return 1.0 - p
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * p))
        if name == "cosine_with_restarts":
            if p >= 1.0:
                return 0.0
            return 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * p) % 1.0)))
        return (1.0 - p) ** power  # polynomial, ending at 0

    def multiplier(step: int) -> float:
        if step < warmup:
            return step / warmup
        return after_warmup(step)

    return multiplier


def build_scheduler(optimizer, name: str, *, total_steps: int, lr_warmup_steps: float = 0,
                    num_cycles: int = 1, power: float = 1.0):
    from torch.optim.lr_scheduler import LambdaLR

    fn = lr_multiplier(name, total_steps=total_steps,
                       warmup_steps=resolve_warmup_steps(lr_warmup_steps, total_steps),
                       num_cycles=num_cycles, power=power)
    return LambdaLR(optimizer, fn)


def build_scheduler_for(optimizer, optimizer_cfg: OptimizerSection, total_steps: int):
    """The scheduler a RunConfig's [optimizer] section describes."""
    return build_scheduler(optimizer, optimizer_cfg.lr_scheduler, total_steps=total_steps,
                           lr_warmup_steps=optimizer_cfg.lr_warmup_steps,
                           num_cycles=optimizer_cfg.lr_scheduler_num_cycles,
                           power=optimizer_cfg.lr_scheduler_power)


class OptimizerOwnSchedule:
    """For optimizers that set their own step size (Adafactor relative_step): stepping is a no-op."""

    def step(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
