"""Build the optimizer a config names, over the LoRA parameter groups (unet / te1 / te2).

`optimizer_args` arrive as sd-scripts-style "key=value" strings; values are parsed to Python
(bool, int, float, None, or a tuple for comma lists such as `betas=0.9,0.99`).
"""
from __future__ import annotations

import ast
from typing import Any, Iterable

from engine.errors import ConfigError

BITSANDBYTES = {
    "AdamW8bit": "AdamW8bit",
    "PagedAdamW8bit": "PagedAdamW8bit",
    "Lion": "Lion",  # bitsandbytes' 32-bit Lion (sd-scripts uses lion-pytorch; same update rule)
    "Lion8bit": "Lion8bit",
    "PagedLion8bit": "PagedLion8bit",
}


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


def uses_own_lr(optimizer_type: str, args: dict[str, Any]) -> bool:
    """Adafactor with relative_step computes its own learning rate; the schedule does not apply."""
    return optimizer_type == "Adafactor" and bool(args.get("relative_step", False))


def build_optimizer(optimizer_type: str, param_groups: list[dict], args: dict[str, Any]):
    """The optimizer over `param_groups` (each with its own "lr"); `args` are extra kwargs."""
    import torch

    kwargs = dict(args)
    try:
        if optimizer_type == "AdamW":
            return torch.optim.AdamW(param_groups, **kwargs)
        if optimizer_type == "SGD":
            return torch.optim.SGD(param_groups, **kwargs)
        if optimizer_type in BITSANDBYTES:
            import bitsandbytes as bnb

            return getattr(bnb.optim, BITSANDBYTES[optimizer_type])(param_groups, **kwargs)
        if optimizer_type == "Adafactor":
            return _adafactor(param_groups, kwargs)
        if optimizer_type == "Prodigy":
            return _prodigy(param_groups, kwargs)
    except TypeError as exc:  # an optimizer_args key the optimizer does not take
        raise ConfigError(f"{optimizer_type} rejected optimizer_args: {exc}", key="optimizer.optimizer_args",
                          hint=f"remove or rename the argument; see {optimizer_type}'s documentation") from None
    raise ConfigError(f"unknown optimizer_type '{optimizer_type}'", key="optimizer.optimizer_type",
                      hint="AdamW, AdamW8bit, PagedAdamW8bit, Lion, Lion8bit, PagedLion8bit, Adafactor, SGD, Prodigy")


def _adafactor(param_groups: list[dict], kwargs: dict[str, Any]):
    from transformers.optimization import Adafactor

    # transformers defaults to relative_step=True, which ignores the configured lr; a user who
    # set a learning rate expects it to be used, so relative_step is opt-in here.
    kwargs.setdefault("relative_step", False)
    kwargs.setdefault("scale_parameter", False)
    kwargs.setdefault("warmup_init", False)
    if kwargs["relative_step"]:
        param_groups = [{**group, "lr": None} for group in param_groups]
    return Adafactor(param_groups, lr=None if kwargs["relative_step"] else param_groups[0]["lr"], **kwargs)


def _prodigy(param_groups: list[dict], kwargs: dict[str, Any]):
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise ConfigError("optimizer_type Prodigy needs the prodigyopt package, which is not installed",
                          key="optimizer.optimizer_type",
                          hint="pip install prodigyopt (or: pip install 'sdxl-tui[prodigy]')") from None
    return Prodigy(param_groups, **kwargs)


def group_lrs(optimizer) -> dict[str, float]:
    """Learning rate per named parameter group, as the optimizer will apply it next step."""
    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper keeps the real one here
    out: dict[str, float] = {}
    for index, group in enumerate(optimizer.param_groups):
        name = group.get("name", f"group{index}")
        lr = group.get("lr")
        if lr is None:  # Adafactor relative_step: its own schedule, read from its state
            lr = _adafactor_effective_lr(optimizer, group)
        if "d" in group and group.get("d") is not None:  # Prodigy: the step is d * lr
            lr = group["d"] * lr
        out[name] = float(lr)
    return out


def _adafactor_effective_lr(optimizer, group: dict) -> float:
    for param in group["params"]:
        state = optimizer.state.get(param)
        if state and "step" in state:
            return float(type(optimizer)._get_lr(group, state))
    return 0.0
