"""A minimal run view: runs `engine.run` in a worker thread and shows the latest events.

Used only when the live dashboard (sdxl_tui.screens.dashboard) is not in this build.
"""
from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Log, Static

from engine.control import RunControl


class EventPosted(Message):
    def __init__(self, event) -> None:
        super().__init__()
        self.event = event


class ProgressScreen(Screen):
    BINDINGS = [Binding("x", "stop", "Stop", id="progress.stop"), Binding("q", "leave", "Leave", id="progress.leave")]

    def __init__(self, cfg, config_path: Path) -> None:
        super().__init__()
        self.cfg = cfg
        self.config_path = config_path
        self.control = RunControl()
        self.result = None

    def compose(self) -> ComposeResult:
        yield Static(f"[b]Training[/b] {self.config_path}", id="progress-title")
        yield Static("starting…", id="progress-status")
        yield Log(id="progress-log")
        yield Footer()

    def on_mount(self) -> None:
        self.run_engine()

    @work(thread=True, exit_on_error=False)
    def run_engine(self) -> None:
        import engine

        self.result = engine.run(self.cfg, lambda event: self.post_message(EventPosted(event)), self.control)

    def on_event_posted(self, message: EventPosted) -> None:
        event = message.event
        kind = type(event).__name__
        fields = {k: v for k, v in vars(event).items() if k != "time" and v not in ("", None, {}, [])}
        summary = ", ".join(f"{k}={v}" for k, v in list(fields.items())[:6])
        self.query_one("#progress-status", Static).update(f"{kind}: {summary}")
        self.query_one("#progress-log", Log).write_line(f"{kind}: {summary}")

    def action_stop(self) -> None:
        self.control.request_stop("stopped from the wizard")

    def action_leave(self) -> None:
        self.app.pop_screen()
