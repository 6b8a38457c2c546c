"""A small App hosting only the dashboard (`sdxl-tui watch`, and the train-from-TUI path)."""
from __future__ import annotations

from typing import Optional

from textual.app import App

from sdxl_tui.run_model import FinalState
from sdxl_tui.screens.dashboard import DashboardScreen


class DashboardApp(App[Optional[FinalState]]):
    """Exits with the dashboard's result: the FinalState, or None if left while running."""

    TITLE = "sdxl-tui"

    def __init__(self, screen: DashboardScreen) -> None:
        super().__init__()
        self.dashboard = screen

    def on_mount(self) -> None:
        """Show the dashboard; what it is dismissed with becomes the app's result."""
        self.push_screen(self.dashboard, self.exit)
