"""Learning-rate schedules, built on the libraries' own schedule functions as sd-scripts builds
them (`library/train_util.py` get_scheduler_fix): transformers' `TYPE_TO_SCHEDULER_FUNCTION` for
linear / cosine / cosine_with_restarts / polynomial / constant / constant_with_warmup /
inverse_sqrt / cosine_with_min_lr / warmup_stable_decay, diffusers' piecewise_constant,
transformers' `AdafactorSchedule` for Adafactor's own step size, and any `torch.optim.lr_scheduler`
class (or class path) named by `lr_scheduler_type` with `lr_scheduler_args`.

Steps are optimizer steps; the schedule is stepped once per optimizer step (so sd-scripts'
`max_train_steps * num_processes` count, which makes up for accelerate stepping a prepared
scheduler once per process, is `total_steps` here).
"""
from __future__ import annotations

import ast
import importlib
from typing import Any, Iterable

from engine.config.optimizer_names import schedule_steps
from engine.errors import ConfigError

KEY = "optimizer.lr_scheduler"


resolve_steps = resolve_warmup_steps = schedule_steps


def parse_scheduler_args(items: Iterable[str]) -> dict[str, Any]:
    """sd-scripts' lr_scheduler_args: "key=value", the value a Python literal (else the bare text,
    so `step_rules=1:10,0.1` needs no quotes)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"lr_scheduler_args entry '{item}' is not key=value",
                              key="optimizer.lr_scheduler_args", hint='write e.g. "T_max=100"')
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def scheduler_class(type_name: str):
    """A torch.optim.lr_scheduler class by name, or any class by `package.module.Class` path."""
    module_name, _, class_name = type_name.rpartition(".")
    try:
        module = importlib.import_module(module_name or "torch.optim.lr_scheduler")
    except ImportError as exc:
        raise ConfigError(f"lr_scheduler_type {type_name}: cannot import {module_name} ({exc})",
                          key="optimizer.lr_scheduler_type", hint="check the class path") from None
    cls = getattr(module, class_name, None)
    if not callable(cls):
        raise ConfigError(f"lr_scheduler_type {type_name}: no such scheduler class",
                          key="optimizer.lr_scheduler_type",
                          hint="a torch.optim.lr_scheduler class (CosineAnnealingLR, ...) or a class path")
    return cls


def build_scheduler(optimizer, name: str, *, total_steps: int, lr_warmup_steps: float = 0,
                    num_cycles: int = 1, power: float = 1.0, lr_decay_steps: float = 0,
                    timescale: int | None = None, min_lr_ratio: float | None = None,
                    scheduler_args: dict[str, Any] | None = None):
    """The library schedule `name` over `total_steps` optimizer steps, with sd-scripts' arguments.
    Raises ConfigError for an unknown name or arguments the schedule does not take."""
    from diffusers.optimization import get_piecewise_constant_schedule
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    extra = dict(scheduler_args or {})
    warmup = resolve_steps(lr_warmup_steps, total_steps)
    decay = resolve_steps(lr_decay_steps, total_steps)
    common = dict(num_warmup_steps=warmup, num_training_steps=total_steps)
    by_name: dict[str, dict[str, Any]] = {
        "constant": {},
        "constant_with_warmup": dict(num_warmup_steps=warmup),
        "inverse_sqrt": dict(num_warmup_steps=warmup, timescale=timescale),
        "linear": common,
        "cosine": common,
        "cosine_with_restarts": dict(common, num_cycles=num_cycles),
        "polynomial": dict(common, power=power),
        "cosine_with_min_lr": dict(common, num_cycles=num_cycles / 2, min_lr_rate=min_lr_ratio),
        "warmup_stable_decay": dict(num_warmup_steps=warmup, num_stable_steps=total_steps - warmup - decay,
                                    num_decay_steps=decay, num_cycles=num_cycles / 2,
                                    min_lr_ratio=min_lr_ratio if min_lr_ratio is not None else 0.0),
    }
    if name == "warmup_stable_decay" and warmup + decay > total_steps:
        raise ConfigError(f"lr_scheduler warmup_stable_decay: warm-up {warmup} + decay {decay} steps are more than "
                          f"the run's {total_steps} steps", key="optimizer.lr_decay_steps",
                          hint="shorten lr_warmup_steps or lr_decay_steps (a ratio below 1 follows the run's length)")
    try:
        if name == "piecewise_constant":  # step_rules come in lr_scheduler_args, as in sd-scripts
            return get_piecewise_constant_schedule(optimizer, **extra)
        if name not in by_name:
            raise ConfigError(f"unknown lr_scheduler '{name}'", key=KEY,
                              hint=", ".join([*by_name, "piecewise_constant"]))
        return TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)](optimizer, **by_name[name], **extra)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"lr_scheduler {name}: {exc}", key=KEY,
                          hint="check lr_scheduler_args and the timing options for this schedule") from None


def build_scheduler_for(optimizer, optimizer_cfg, total_steps: int, *, own_step_size: bool = False):
    """The scheduler a RunConfig's [optimizer] section describes. `own_step_size`: Adafactor with
    relative_step, whose schedule only reports the rate the optimizer chose (sd-scripts switches
    to transformers' AdafactorSchedule there, with learning_rate as the initial value)."""
    o = optimizer_cfg
    args = parse_scheduler_args(o.lr_scheduler_args)
    if own_step_size:
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(getattr(optimizer, "optimizer", optimizer), o.resolved_unet_lr)
    if o.lr_scheduler_type:
        try:
            return scheduler_class(o.lr_scheduler_type)(optimizer, **args)
        except TypeError as exc:
            raise ConfigError(f"lr_scheduler_type {o.lr_scheduler_type}: {exc}", key="optimizer.lr_scheduler_args",
                              hint="give the scheduler's required arguments in lr_scheduler_args") from None
    return build_scheduler(optimizer, o.lr_scheduler, total_steps=total_steps, lr_warmup_steps=o.lr_warmup_steps,
                           num_cycles=o.lr_scheduler_num_cycles, power=o.lr_scheduler_power,
                           lr_decay_steps=o.lr_decay_steps, timescale=o.lr_scheduler_timescale,
                           min_lr_ratio=o.lr_scheduler_min_lr_ratio, scheduler_args=args)


class OptimizerOwnSchedule:
    """For schedule-free optimizers, which replace the schedule (sd-scripts uses a dummy
    scheduler there too): stepping is a no-op."""

    def step(self) -> None:
        """Nothing: the optimizer sets its own step size."""
        pass

    def state_dict(self) -> dict:
        """An empty dict: there is no schedule state to save."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""
        pass
