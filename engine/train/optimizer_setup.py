"""The run's optimizer and schedule from the config, and the schedule-free train/eval switch.

Schedule-free optimizers (the `schedulefree` package) train on one sequence of weights and
evaluate on another (an average); the package requires `optimizer.eval()` before the weights are
used for anything but a training step, and `optimizer.train()` after. `in_eval_mode` wraps saves
and samples that way, and then puts back the training weights bit for bit (instead of trusting
the inverse interpolation of `train()`, which rounds), so a run with saves or samples takes the
same steps as one without and a resume stays exact.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from engine.errors import ConfigError


def optimizer_and_schedule(session: Any, total_steps: int):
    """(optimizer, scheduler, fused backward or None, trainable params) for `session.cfg`.
    Raises ConfigError for optimizer or scheduler options the classes refuse."""
    from engine.config.optimizer_names import is_schedule_free
    from engine.train.fused_backward import FusedBackward
    from engine.train.optimizers import build_optimizer, parse_optimizer_args, uses_own_lr
    from engine.train.schedulers import OptimizerOwnSchedule, build_scheduler_for

    cfg = session.cfg
    opt = cfg.optimizer
    from engine.train.network_setup import param_groups

    groups = param_groups(session.network, cfg)  # the three rates, block lr weights and LoRA+ ratios
    args = parse_optimizer_args(opt.optimizer_args)
    optimizer = build_optimizer(opt.optimizer_type, groups, args)
    if is_schedule_free(opt.optimizer_type):
        scheduler = OptimizerOwnSchedule()
    else:
        scheduler = build_scheduler_for(optimizer, opt, total_steps,
                                        own_step_size=uses_own_lr(opt.optimizer_type, args))
    fused = None
    if cfg.precision.fused_backward_pass:
        if session.accelerator.scaler is not None:
            raise ConfigError("fused_backward_pass cannot be used with the fp16 gradient scaler",
                              key="precision.fused_backward_pass", hint="use mixed_precision = \"bf16\"")
        if session.accelerator.num_processes > 1:
            # DDP averages a gradient only after the hook would already have stepped with it.
            raise ConfigError("fused_backward_pass works in one process only (DDP averages gradients across "
                              "processes after the fused step would have used them)",
                              key="precision.fused_backward_pass", hint="set fused_backward_pass = false")
        fused = FusedBackward(optimizer, max_grad_norm=opt.max_grad_norm)
    else:
        optimizer = session.accelerator.prepare(optimizer)
    if cfg.precision.full_fp16:
        from engine.train.precision import allow_fp16_gradients

        allow_fp16_gradients(session.accelerator.scaler)
    params = [p for group in groups for p in group["params"]]
    return optimizer, scheduler, fused, params


def in_eval_mode(optimizer: Any, params: list) -> Callable[[Callable], Callable]:
    """A decorator: the call runs with a schedule-free optimizer in eval mode (the weights it
    sees are the averaged ones), and the training weights come back exactly afterwards. For
    any other optimizer it returns the function unchanged."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper keeps the real one here
    if not (callable(getattr(inner, "eval", None)) and callable(getattr(inner, "train", None))
            and any("train_mode" in group for group in inner.param_groups)):
        return lambda fn: fn

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def call(*args, **kwargs):
            import torch

            with torch.no_grad():
                training_weights = [p.detach().clone() for p in params]
            inner.eval()
            try:
                return fn(*args, **kwargs)
            finally:
                inner.train()
                with torch.no_grad():
                    for param, weights in zip(params, training_weights):
                        param.copy_(weights)
        return call

    return wrap
