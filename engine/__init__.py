"""sdxl-tui's training engine. Never imports the UI; heavy imports happen inside functions.

`engine.run(cfg, emit, control)` is the one entry point (see engine/run.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from engine.run import RunResult


def run(cfg: Any, emit: Any, control: Any = None, **kwargs: Any) -> "RunResult":
    from engine.run import run as _run

    return _run(cfg, emit, control, **kwargs)
