"""Optional packages: which option value needs which module, from which pip extra.

One table, read by the rules (engine/config/rules.py) when a config is checked, so a missing
package is a ConfigError naming the extra before any model loads, in the CLI, the wizard and
the engine alike. To support a new optional package, add one row to OPTIONAL_PACKAGES (and the
extra to pyproject.toml). Finding a module uses importlib's finder only: nothing is imported.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from engine.config.schema import RunConfig, locate


@dataclass(frozen=True)
class OptionalPackage:
    """`option` set to one of `values` (case-insensitive; "Name*" matches a prefix) needs `module`,
    installed by `pip install 'sdxl-tui[extra]'` (the package itself is `package`). A row with
    no option is used outside configs (e.g. GPU detection) and only reported, never required."""

    module: str
    package: str
    extra: str
    option: str = ""
    values: tuple[str, ...] = ()
    purpose: str = ""

    def needed_by(self, cfg: RunConfig) -> Optional[str]:
        """The option and value that need this package in `cfg` ("log_with = 'tensorboard'"), or None."""
        if not self.option:
            return None
        section, key = locate(self.option)
        value = getattr(getattr(cfg, section), key)
        for candidate in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(candidate, str) and value_matches(candidate, self.values):
                return f"{key} = {candidate!r}"
        return None


def value_matches(value: str, patterns: Iterable[str]) -> bool:
    """Case-insensitive equality with one of `patterns`; "Name*" matches any value starting with Name."""
    low = value.lower()
    return any(low.startswith(p[:-1].lower()) if p.endswith("*") else low == p.lower() for p in patterns)


# One row per (option value, module). Keep one row per line so parallel additions merge cleanly.
OPTIONAL_PACKAGES: tuple[OptionalPackage, ...] = (
    OptionalPackage("tensorboard", "tensorboard", "tensorboard", "log_with", ("tensorboard",), "TensorBoard logging"),
    OptionalPackage("prodigyopt", "prodigyopt", "prodigy", "optimizer_type", ("Prodigy",), "the Prodigy optimizer"),
    OptionalPackage("pynvml", "nvidia-ml-py", "nvml", purpose="GPU name and memory in the wizard (else from torch)"),
)


def module_available(module: str) -> bool:
    """True when `module` can be imported (found on the path, not imported); False also for a missing or broken
    parent package."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package that is missing or broken
        return False


@dataclass(frozen=True)
class MissingPackage:
    """An optional package a config needs and this install lacks."""
    row: OptionalPackage
    reason: str  # the option and value that need it

    @property
    def message(self) -> str:
        """What needs the package and the pip command that installs it (its sdxl-tui extra)."""
        return (f"{self.reason} needs the {self.row.package} package, which is not installed: "
                f"pip install 'sdxl-tui[{self.row.extra}]' (or pip install {self.row.package})")


def missing_packages(cfg: RunConfig, table: Iterable[OptionalPackage] = OPTIONAL_PACKAGES,
                     available: Optional[Callable[[str], bool]] = None) -> list[MissingPackage]:
    """The optional packages `cfg` needs that are not installed, in table order."""
    available = available or module_available
    found = []
    for row in table:
        reason = row.needed_by(cfg)
        if reason is not None and not available(row.module):
            found.append(MissingPackage(row, reason))
    return found


def package_report(table: Iterable[OptionalPackage] = OPTIONAL_PACKAGES) -> list[tuple[str, str, bool]]:
    """(package, extra, installed) for every optional package, for `sdxl-tui --version`."""
    return [(row.package, row.extra, module_available(row.module)) for row in table]
