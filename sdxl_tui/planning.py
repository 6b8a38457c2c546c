"""Planning the draft in a worker thread: what `engine.plan.run_plan.make_plan` knows about it.

A dataset the wizard is still building exists only in memory, so it is written to a
temporary folder for the planner. Results come back as a `PlanReady` message; the worker
never touches a widget.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from textual.message import Message

from engine.config.schema import RunConfig


@dataclass(frozen=True)
class PlanOutcome:
    cfg: RunConfig  # the draft the plan was made for (stale results are dropped)
    dataset_toml: Optional[str] = None
    plan: Optional[Any] = None
    error: str = ""


class PlanReady(Message):
    def __init__(self, outcome: PlanOutcome) -> None:
        super().__init__()
        self.outcome = outcome


def make_draft_plan(cfg: RunConfig, dataset_toml: Optional[str], base_dir: Path) -> PlanOutcome:
    """Plan the draft (never raises: a problem comes back as `error` for the screen to show).
    The rule check is left to `WizardState.issues()`, which lists the same rules' messages
    (engine/config/rules.py, the rules `train` and `plan` check through engine/plan/checks.py)."""
    try:
        from engine.plan.run_plan import make_plan
    except ImportError:
        return PlanOutcome(cfg, dataset_toml, error="planning is not available in this build")
    try:
        if dataset_toml is not None:
            with tempfile.TemporaryDirectory(prefix="sdxl-tui-plan-") as tmp:
                path = Path(tmp) / "dataset.toml"
                path.write_text(dataset_toml, encoding="utf-8")
                return PlanOutcome(cfg, dataset_toml, make_plan(cfg.with_values(dataset_config=str(path)),
                                                                base_dir=base_dir, check=False))
        if not cfg.dataset.dataset_config:
            return PlanOutcome(cfg, dataset_toml, error="no dataset yet (step 2)")
        return PlanOutcome(cfg, dataset_toml, make_plan(cfg, base_dir=base_dir, check=False))
    except Exception as exc:  # shown to the person; the wizard keeps working
        return PlanOutcome(cfg, dataset_toml, error=str(exc))
