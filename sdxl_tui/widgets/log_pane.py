"""The run's log: engine log lines, warnings, saves and samples, newest at the bottom."""
from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from sdxl_tui.run_model import LogLine, RunView

LEVEL_STYLES = {"warning": "yellow", "error": "bold red", "debug": "grey50"}


def format_line(line: LogLine) -> Text:
    """A log line as "HH:MM:SS message", coloured by level."""
    stamp = time.strftime("%H:%M:%S", time.localtime(line.time)) if line.time else "--:--:--"
    return Text.assemble((stamp + " ", "grey50"), (line.message, LEVEL_STYLES.get(line.level, "")))


class LogPane(RichLog):
    """Appends only the lines it has not written yet (the view keeps a running total)."""

    DEFAULT_CSS = """
    LogPane { height: 8; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, wrap=True, markup=False, max_lines=2000)
        self.border_title = "Log"
        self._written = 0

    def show(self, view: RunView) -> None:
        """Append the log lines of `view` not written yet."""
        first_index = view.log_total - len(view.log)
        new = view.log[max(0, self._written - first_index):]
        for line in new:
            self.write(format_line(line))
        self._written = view.log_total
