"""Cross-option rules about the optimizer and the learning-rate schedule (sd-scripts' own checks
in `library/train_util.py` get_optimizer / get_scheduler_fix, and every timing option a chosen
schedule does not read, so none is ignored without a word). Called from engine/config/rules.py."""
from __future__ import annotations

from typing import Iterable

from engine.config.optimizer_names import is_schedule_free, missing_package, sets_own_step_size

# Which schedule reads which timing option (the arguments sd-scripts passes to the library).
_READS = {
    "lr_decay_steps": ("warmup_stable_decay",),
    "lr_scheduler_timescale": ("inverse_sqrt",),
    "lr_scheduler_min_lr_ratio": ("cosine_with_min_lr", "warmup_stable_decay"),
    "lr_scheduler_num_cycles": ("cosine_with_restarts", "cosine_with_min_lr", "warmup_stable_decay"),
    "lr_scheduler_power": ("polynomial",),
}
_UNSET = {"lr_decay_steps": 0, "lr_scheduler_timescale": None, "lr_scheduler_min_lr_ratio": None,
          "lr_scheduler_num_cycles": 1, "lr_scheduler_power": 1.0}


def _adafactor_relative_step(o) -> bool:
    args = {k.strip(): v.strip().lower() for k, v in o.parsed_args.items()}
    return args.get("relative_step", "true") != "false" or args.get("warmup_init", "false") == "true"


def optimizer_rules(cfg, issue, error: str, warning: str) -> Iterable:
    """RuleIssues (built by `issue(level, keys, message, fix)`) for the [optimizer] section."""
    o = cfg.optimizer
    message = missing_package(o.optimizer_type)
    if message:
        yield issue(error, ("optimizer_type",), message, {})
    own_step = o.optimizer_type == "Adafactor" and _adafactor_relative_step(o)
    if o.lr_scheduler == "adafactor" and not own_step:
        yield issue(error, ("lr_scheduler", "optimizer_type"),
                    "lr_scheduler = \"adafactor\" only reports the step size Adafactor chooses with relative_step; "
                    "use it with optimizer_type = \"Adafactor\" (relative_step on), or choose another schedule", {})
    if own_step:
        args = o.parsed_args
        if args.get("relative_step", "").lower() == "false" and args.get("warmup_init", "").lower() == "true":
            yield issue(warning, ("optimizer_args",), "Adafactor: warmup_init=True turns relative_step back on "
                        "(as in sd-scripts)", {})
        if o.lr_scheduler != "adafactor" or o.lr_scheduler_type:
            yield issue(warning, ("lr_scheduler", "optimizer_args"),
                        f"Adafactor with relative_step (its default) sets its own step size: learning_rate is only "
                        f"the rate shown before the first step, and lr_scheduler {o.lr_scheduler!r} is replaced by "
                        f"the adafactor schedule, as sd-scripts does; add relative_step=False to optimizer_args to "
                        f"use the learning rate and schedule", {"lr_scheduler": "adafactor", "lr_scheduler_type": ""})
    if is_schedule_free(o.optimizer_type) and (o.lr_scheduler != "constant" or o.lr_scheduler_type
                                               or o.lr_warmup_steps):
        yield issue(warning, ("lr_scheduler", "lr_warmup_steps", "optimizer_type"),
                    f"{o.optimizer_type} replaces the learning-rate schedule (sd-scripts gives it none): "
                    f"lr_scheduler, lr_scheduler_type and lr_warmup_steps are not used; for a warm-up put "
                    f"warmup_steps=N in optimizer_args", {"lr_scheduler": "constant", "lr_scheduler_type": "",
                                                          "lr_warmup_steps": 0})
    if sets_own_step_size(o.optimizer_type) and o.learning_rate <= 0.1:
        yield issue(warning, ("learning_rate", "optimizer_type"),
                    f"{o.optimizer_type} estimates the step size itself and multiplies it by learning_rate: "
                    f"learning_rate = {o.learning_rate:g} is very low for it (1.0 is usual, as sd-scripts warns)", {})
    yield from _schedule_option_rules(o, issue, error, warning)


def _schedule_option_rules(o, issue, error: str, warning: str) -> Iterable:
    if o.lr_scheduler_type:
        if o.lr_warmup_steps:
            yield issue(error, ("lr_scheduler_type", "lr_warmup_steps"),
                        f"lr_scheduler_type {o.lr_scheduler_type} takes no warm-up (sd-scripts refuses one too): set "
                        f"lr_warmup_steps = 0 and give the class its own arguments in lr_scheduler_args",
                        {"lr_warmup_steps": 0})
        if o.lr_scheduler != "constant":
            yield issue(warning, ("lr_scheduler", "lr_scheduler_type"),
                        f"lr_scheduler {o.lr_scheduler!r} is not used: lr_scheduler_type {o.lr_scheduler_type} "
                        f"replaces it", {"lr_scheduler": "constant"})
        return
    for key, readers in _READS.items():
        value = getattr(o, key)
        if value != _UNSET[key] and o.lr_scheduler not in readers:
            yield issue(warning, (key, "lr_scheduler"),
                        f"{key} = {value} is not used by lr_scheduler {o.lr_scheduler!r} (only by "
                        f"{', '.join(readers)})", {})
