"""Every `optimizer_type` sd-scripts accepts, where its class lives and which pip extra installs it.

Pure data (no torch): the config validates names with it, the rules check that the package is
installed before anything loads, and engine/train/optimizers.py builds the optimizer from it.
Names match case-insensitively, as in sd-scripts' `library/train_util.py` get_optimizer, which
lower-cases the name before comparing. A name with a dot is a class path
(`package.module.Class`), taken as is; sd-scripts also takes a bare `torch.optim` class name
(`RAdam`), which is written `torch.optim.RAdam` here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

# pip extras of this project (pyproject.toml) for packages that are not core dependencies.
EXTRAS = {"dadaptation": "dadaptation", "prodigyopt": "prodigy", "schedulefree": "schedulefree"}


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer name: the class `module.class_name`, its family (for docs and tests),
    keyword arguments sd-scripts always passes (`fixed`) or passes unless optimizer_args set
    them (`defaults`)."""

    name: str
    family: str
    module: str
    class_name: str
    fixed: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def package(self) -> str:
        """The top-level package that provides the optimizer (what pip must install)."""
        return self.module.split(".")[0]

    @property
    def extra(self) -> str:
        """The pip extra that installs the package ("" for core dependencies)."""
        return EXTRAS.get(self.package, "")


def _bnb(name: str, family: str, class_name: Optional[str] = None, **kw) -> OptimizerSpec:
    return OptimizerSpec(name, family, "bitsandbytes.optim", class_name or name, **kw)


def _dadapt(name: str, class_name: str, experimental: bool = False) -> OptimizerSpec:
    module = "dadaptation.experimental" if experimental else "dadaptation"
    return OptimizerSpec(name, "dadaptation", module, class_name)


_SPECS = (
    OptimizerSpec("AdamW", "adamw", "torch.optim", "AdamW"),
    _bnb("AdamW8bit", "adamw"),
    _bnb("PagedAdamW", "adamw"),
    _bnb("PagedAdamW8bit", "adamw"),
    _bnb("PagedAdamW32bit", "adamw"),
    # sd-scripts builds Lion from lion-pytorch; bitsandbytes' 32-bit Lion has the same update rule.
    _bnb("Lion", "lion"),
    _bnb("Lion8bit", "lion"),
    _bnb("PagedLion8bit", "lion"),
    # sd-scripts: nesterov=True always, momentum 0.9 unless optimizer_args give one.
    OptimizerSpec("SGDNesterov", "sgd", "torch.optim", "SGD", fixed={"nesterov": True}, defaults={"momentum": 0.9}),
    _bnb("SGDNesterov8bit", "sgd", "SGD8bit", fixed={"nesterov": True}, defaults={"momentum": 0.9}),
    OptimizerSpec("SGD", "sgd", "torch.optim", "SGD"),  # sd-scripts reaches it as a bare torch.optim name
    # sd-scripts: "DAdaptation" is the experimental DAdaptAdamPreprint.
    _dadapt("DAdaptation", "DAdaptAdamPreprint", experimental=True),
    _dadapt("DAdaptAdamPreprint", "DAdaptAdamPreprint", experimental=True),
    _dadapt("DAdaptAdam", "DAdaptAdam"),
    _dadapt("DAdaptLion", "DAdaptLion"),
    _dadapt("DAdaptAdaGrad", "DAdaptAdaGrad"),
    _dadapt("DAdaptAdan", "DAdaptAdan"),
    _dadapt("DAdaptAdanIP", "DAdaptAdanIP", experimental=True),
    _dadapt("DAdaptSGD", "DAdaptSGD"),
    OptimizerSpec("Prodigy", "prodigy", "prodigyopt", "Prodigy"),
    OptimizerSpec("Adafactor", "adafactor", "transformers.optimization", "Adafactor"),
    # sd-scripts documents these as class paths (bitsandbytes.optim.AdEMAMix8bit); the short names map there.
    _bnb("AdEMAMix8bit", "ademamix"),
    _bnb("PagedAdEMAMix8bit", "ademamix"),
    OptimizerSpec("RAdamScheduleFree", "schedulefree", "schedulefree", "RAdamScheduleFree"),
    OptimizerSpec("AdamWScheduleFree", "schedulefree", "schedulefree", "AdamWScheduleFree"),
    OptimizerSpec("SGDScheduleFree", "schedulefree", "schedulefree", "SGDScheduleFree"),
)
OPTIMIZERS: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}
_BY_LOWER = {name.lower(): name for name in OPTIMIZERS}


def canonical_optimizer_name(value: str) -> Optional[str]:
    """sd-scripts' spelling of a known name (any case), a class path as given, else None."""
    text = str(value).strip()
    if text.lower() in _BY_LOWER:
        return _BY_LOWER[text.lower()]
    parts = text.split(".")
    if len(parts) >= 2 and all(part.isidentifier() for part in parts):
        return text
    return None


def optimizer_spec(name: str) -> OptimizerSpec:
    """The spec of a canonical name, or of a class path (family "custom")."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    module, _, class_name = name.rpartition(".")
    return OptimizerSpec(name, "custom", module, class_name)


def is_schedule_free(name: str) -> bool:
    """Schedule-free optimizers replace the lr schedule and need train()/eval() switching."""
    return optimizer_spec(name).family == "schedulefree" or name.lower().endswith("schedulefree")


def sets_own_step_size(name: str) -> bool:
    """D-Adaptation and Prodigy estimate the step size d; `learning_rate` multiplies it (1.0 is usual)."""
    return optimizer_spec(name).family in ("dadaptation", "prodigy")


def unknown_name_message(value: str) -> str:
    """The error text for an optimizer_type that is neither a known name nor a class path."""
    return (f"unknown optimizer_type {value!r}: use one of {', '.join(OPTIMIZERS)}, or a class path "
            f"such as torch.optim.RAdam (optimizer_args are passed to it)")


def missing_package(name: str) -> Optional[str]:
    """A message naming the pip extra when the optimizer's package is not installed, else None.
    Looks the package up without importing it (no torch at config time)."""
    import importlib.util

    spec = optimizer_spec(name)
    if importlib.util.find_spec(spec.package) is not None:
        return None
    if spec.family == "custom":
        return (f"optimizer_type {name}: no module {spec.package} is installed: "
                f"install the package that provides {spec.module}")
    how = f"pip install 'sdxl-tui[{spec.extra}]'" if spec.extra else f"pip install {spec.package}"
    return f"optimizer_type {name} needs the {spec.package} package, which is not installed: {how}"


def schedule_steps(value: float, total_steps: int) -> int:
    """lr_warmup_steps / lr_decay_steps in steps: a count, or below 1 a fraction of the total
    (sd-scripts get_scheduler_fix: int(ratio * total))."""
    if 0 < value < 1:
        return int(value * total_steps)
    return int(value)


def schedule_line(optimizer_cfg, total_steps: int) -> str:
    """One line for plans and the wizard: the schedule and its warm-up length in steps."""
    o = optimizer_cfg
    if is_schedule_free(o.optimizer_type):
        return f"Schedule: none ({o.optimizer_type} replaces it)"
    name = o.lr_scheduler_type or o.lr_scheduler
    warmup = schedule_steps(o.lr_warmup_steps, total_steps)
    ratio = f" ({o.lr_warmup_steps:g} of the run)" if 0 < o.lr_warmup_steps < 1 else ""
    return f"Schedule: {name}, warm-up {warmup} of {total_steps} steps{ratio}"
