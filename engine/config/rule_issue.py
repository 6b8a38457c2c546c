"""One finding of the cross-option rules (engine/config/rules.py and the rule modules beside it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class RuleIssue:
    """`level` is ERROR (the run is refused, exit 78) or WARNING; `keys` are the options it names;
    `fix` holds the values the wizard sets when the person accepts the fix."""

    level: str
    keys: tuple[str, ...]
    message: str
    fix: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"
