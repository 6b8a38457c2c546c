"""Build the optimizer a config names, over the LoRA parameter groups (unet / te1 / te2).

Names and classes: engine/config/optimizer_names.py (every name sd-scripts' `library/train_util.py`
get_optimizer accepts, each from its maintained package). `optimizer_args` arrive as
sd-scripts-style "key=value" strings; values are parsed to Python (bool, int, float, None, or a
tuple for comma lists such as `betas=0.9,0.99`) and passed to the class as keyword arguments.
"""
from __future__ import annotations

import ast
import importlib
from typing import Any, Iterable

from engine.config.optimizer_names import OptimizerSpec, missing_package, optimizer_spec
from engine.errors import ConfigError


def parse_value(raw: str) -> Any:
    """One optimizer_args value: Python literal where it is one, else the bare string."""
    text = raw.strip()
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part.strip())
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_optimizer_args(items: Iterable[str]) -> dict[str, Any]:
    """optimizer_args ("key=value" strings, as sd-scripts) as keyword arguments, values read by
    `parse_value`. Raises ConfigError for an entry without "="."""
    from engine.config.key_value import parse_pairs

    pairs = parse_pairs(items, lambda item: ConfigError(f"optimizer_args entry '{item}' is not key=value",
                                                        key="optimizer.optimizer_args",
                                                        hint='write e.g. "weight_decay=0.01"'))
    return {key: parse_value(value) for key, value in pairs.items()}


def adafactor_relative_step(args: dict[str, Any]) -> bool:
    """sd-scripts' Adafactor: relative_step defaults to True, and warmup_init turns it on."""
    return bool(args.get("relative_step", True)) or bool(args.get("warmup_init", False))


def uses_own_lr(optimizer_type: str, args: dict[str, Any]) -> bool:
    """Adafactor with relative_step computes its own learning rate; the schedule does not apply."""
    return optimizer_type == "Adafactor" and adafactor_relative_step(args)


def optimizer_class(spec: OptimizerSpec):
    """The class a spec names; ConfigError naming the pip extra (missing package) or the path."""
    key = "optimizer.optimizer_type"
    message = missing_package(spec.name)
    if message is not None:
        raise ConfigError(message, key=key, hint=message.rpartition(": ")[2])
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ConfigError(f"optimizer_type {spec.name}: cannot import {spec.module} ({exc})", key=key,
                          hint="check the class path, or install the package that provides it") from None
    cls = getattr(module, spec.class_name, None)
    if not callable(cls):
        raise ConfigError(f"optimizer_type {spec.name}: {spec.module} has no class {spec.class_name}", key=key,
                          hint="check the spelling (class names are case-sensitive)")
    return cls


def check_optimizer(optimizer_type: str) -> None:
    """Import the optimizer's class now, so a missing package or a wrong class path stops the run
    before a model loads (ConfigError)."""
    optimizer_class(optimizer_spec(optimizer_type))


def build_optimizer(optimizer_type: str, param_groups: list[dict], args: dict[str, Any]):
    """The optimizer over `param_groups` (each with its own "lr"); `args` are extra kwargs.
    Schedule-free optimizers come back in train mode (their package requires it before a step).
    Raises ConfigError for a missing package or arguments the class does not take."""
    spec = optimizer_spec(optimizer_type)
    cls = optimizer_class(spec)
    for key, value in spec.fixed.items():
        if key in args and args[key] != value:
            raise ConfigError(f"{optimizer_type} always uses {key}={value} (as in sd-scripts); optimizer_args "
                              f"sets {key}={args[key]}", key="optimizer.optimizer_args",
                              hint=f"remove {key} from optimizer_args, or choose another optimizer")
    kwargs = {**spec.defaults, **args, **spec.fixed}
    if spec.name == "AdamW" and fused_adamw_fits(param_groups, kwargs):
        kwargs["fused"] = True
    try:
        if spec.family == "adafactor":
            return _adafactor(cls, param_groups, kwargs)
        optimizer = cls(param_groups, lr=param_groups[0]["lr"], **kwargs)
    except TypeError as exc:  # an optimizer_args key the optimizer does not take
        raise ConfigError(f"{optimizer_type} rejected optimizer_args: {exc}", key="optimizer.optimizer_args",
                          hint=f"remove or rename the argument; see {optimizer_type}'s documentation") from None
    if spec.family == "schedulefree":
        optimizer.train()
    return optimizer


def fused_adamw_fits(param_groups: list[dict], kwargs: dict[str, Any]) -> bool:
    """Whether torch's AdamW can take its fused kernel: the same update rule as the default
    (per-tensor loop on the CPU), computed in one kernel per tensor instead of ~10 dispatched
    ops; on the CPU that is ~4x less optimizer time for a LoRA's hundreds of small tensors.
    Only for fp32 parameters on the CPU or CUDA, and never when optimizer_args choose an
    implementation (fused / foreach) or need `differentiable`."""
    import torch

    if {"fused", "foreach", "differentiable", "capturable"} & kwargs.keys():
        return False
    params = [p for group in param_groups for p in group["params"]]
    return bool(params) and all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)


def _adafactor(cls, param_groups: list[dict], kwargs: dict[str, Any]):
    """transformers' Adafactor with sd-scripts' settings: relative_step on unless optimizer_args
    turn it off (warmup_init turns it back on); with it, the groups' rates are dropped and the
    optimizer sets its own step size (sd-scripts `get_optimizer`)."""
    kwargs["relative_step"] = adafactor_relative_step(kwargs)
    if kwargs["relative_step"]:
        groups = [{k: v for k, v in group.items() if k != "lr"} for group in param_groups]
        return cls(groups, lr=None, **kwargs)
    return cls(param_groups, lr=param_groups[0]["lr"], **kwargs)


def group_lrs(optimizer) -> dict[str, float]:
    """Learning rate per named parameter group, as the optimizer will apply it next step."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper keeps the real one here
    out: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        name = group.get("name", f"group{index}")
        lr = group.get("lr")
        if lr is None or group.get("relative_step"):  # Adafactor relative_step: its own rate, read from its state
            lr = _adafactor_effective_lr(optimizer, group)
        if "d" in group and group.get("d") is not None:  # D-Adaptation / Prodigy: the step is d * lr
            lr = group["d"] * lr
        elif group.get("scheduled_lr") is not None:  # schedule-free: lr times its own warm-up
            lr = group["scheduled_lr"]
        out[name] = float(lr)
    return out


def _adafactor_effective_lr(optimizer, group: dict) -> float:
    for param in group["params"]:
        state = optimizer.state.get(param)
        if state and "step" in state:
            return float(type(optimizer)._get_lr(group, state))
    return 0.0
