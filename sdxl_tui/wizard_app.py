"""What a wizard screen or widget may ask of its app, and the typed way to reach it.

`wizard_of(self).state` instead of `self.app.state  # type: ignore` (Textual types `self.app`
as a plain App). The screens depend on the `Wizard` protocol, never on `sdxl_tui.app`, so the
imports run one way: the app imports its screens, the screens import only this module.
`sdxl_tui.app.WizardApp` implements it (tests/ui/test_wizard_pilot.py checks every member).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from sdxl_tui.gpu_info import GpuInfo
    from sdxl_tui.recent_runs import RecentRun
    from sdxl_tui.wizard_state import WizardState


@runtime_checkable
class Wizard(Protocol):
    """The app as the wizard's screens see it: the draft, where runs are saved, and the ways to move on."""

    state: WizardState  # the draft; every step screen runs only once one is begun
    has_draft: bool
    save_dir: Path  # where a new run's config is proposed
    gpu: GpuInfo | None  # None until detected
    cursor_blink: bool  # False in tests, for stable snapshots

    def open_template(self, path: Path) -> None:
        """Begin a draft from a template TOML (saving never overwrites the template)."""

    def open_defaults(self) -> None:
        """Begin a draft from the built-in defaults."""

    def open_config(self, path: Path, kohya: bool = False) -> None:
        """Begin a draft from a saved run config, or with `kohya` from an sd-scripts/kohya_ss one."""

    def open_recent(self, run: RecentRun) -> None:
        """Begin a draft from a recent run's config, shown at the review step."""

    def watch_recent(self, run: RecentRun) -> None:
        """Open the live dashboard of a recent run."""

    def goto_step(self, step: int) -> None:
        """Show step `step` (1-7; 0 or less: the start screen)."""

    def start_training(self, config_path: Path) -> None:
        """Open the live dashboard training the saved config at `config_path`."""


def wizard_of(node: DOMNode) -> Wizard:
    """The Wizard `node` runs in (every wizard screen and field runs in one)."""
    return cast(Wizard, node.app)
