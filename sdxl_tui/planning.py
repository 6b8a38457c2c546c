"""Planning the draft in a worker thread: what `engine.plan.run_plan.make_plan` knows about it.

A dataset the wizard is still building exists only in memory and is planned from there. Results come
back as a `PlanReady` message; the worker never touches a widget.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from textual.message import Message

from engine.config.schema import RunConfig
from sdxl_tui.wizard_state import DatasetDraft


@dataclass(frozen=True)
class PlanOutcome:
    """A plan made for one draft in a worker: the plan, or the error text that stopped it."""
    cfg: RunConfig  # the draft the plan was made for (stale results are dropped)
    dataset_toml: Optional[str] = None
    plan: Optional[Any] = None
    error: str = ""


class PlanReady(Message):
    """Posted by the planning worker when a PlanOutcome is ready."""
    def __init__(self, outcome: PlanOutcome) -> None:
        super().__init__()
        self.outcome = outcome


def make_draft_plan(cfg: RunConfig, draft: Optional[DatasetDraft], base_dir: Path) -> PlanOutcome:
    """Plan the draft (never raises: a problem comes back as `error` for the screen to show).
    A dataset the wizard is still building is planned from memory (`DatasetDraft.parsed`). The
    rule check is left to `WizardState.issues()`, which lists the same rules' messages
    (engine/config/rules.py, the rules `train` and `plan` check through engine/plan/checks.py)."""
    from engine.plan.run_plan import make_plan

    dataset_toml = draft.to_toml() if draft is not None else None
    try:
        if draft is not None:
            parsed = draft.parsed(base_dir, cfg.training.train_batch_size)
            return PlanOutcome(cfg, dataset_toml, make_plan(cfg, parsed, check=False))
        if not cfg.dataset.dataset_config:
            return PlanOutcome(cfg, dataset_toml, error="no dataset yet (step 2)")
        return PlanOutcome(cfg, dataset_toml, make_plan(cfg, base_dir=base_dir, check=False))
    except Exception as exc:  # shown to the person; the wizard keeps working
        return PlanOutcome(cfg, dataset_toml, error=str(exc))
