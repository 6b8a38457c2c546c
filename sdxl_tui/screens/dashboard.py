"""The live dashboard: owns a training run (engine.train.run in a worker thread) or watches one
that another process is writing (events.jsonl follower + control file).

Worker threads only post messages; every widget update happens here, in the UI thread,
from one `RunView` snapshot (sdxl_tui.run_model), the same one the console view renders.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.events import Print
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Static
from textual.worker import Worker, WorkerState

from engine.control.run_control import RunControl
from engine.events.types import Event, Failed, Finished, Log
from sdxl_tui.messages import EngineEvent, EventsEnded, is_metric
from sdxl_tui.run_model import FinalState, RunModel, RunView, final_lines
from sdxl_tui.screens.dashboard_commands import DashboardCommands
from sdxl_tui.widgets.log_pane import LogPane
from sdxl_tui.widgets.loss_chart import LossChart
from sdxl_tui.widgets.memory_gauge import MemoryGauge, NvmlProbe
from sdxl_tui.widgets.run_status import (
    RunStatus,
    checkpoints_text,
    final_text,
    header_text,
    warnings_text,
)
from sdxl_tui.widgets.sample_preview import SamplePreview

EventsSource = Callable[[threading.Event], Iterable[Event]]
CommandSink = Callable[[str], None]
CSS_FILE = Path(__file__).resolve().parent.parent / "dashboard.tcss"
NO_BELL_ENV = "SDXL_TUI_NO_BELL"
RENDER_INTERVAL = 0.1  # seconds between redraws driven by metrics alone
LIVE_ENDING_SECONDS = 60.0  # a watched run's ending older than this opens silently


def bell_wanted(flag: Optional[bool]) -> bool:
    """`flag` when given, else True unless SDXL_TUI_NO_BELL is "1", "true" or "yes" (any case)."""
    if flag is not None:
        return flag
    return os.environ.get(NO_BELL_ENV, "").strip().lower() not in ("1", "true", "yes")


class DashboardScreen(DashboardCommands, Screen[Optional[FinalState]]):
    """Dismisses with the run's FinalState, or None when left while the run goes on."""

    CSS_PATH = CSS_FILE
    # dashboard.tcss lays the panels out differently below these sizes (80x24 over SSH)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]
    BINDINGS = [
        Binding("x", "stop", "Stop", id="dashboard.stop"),
        Binding("s", "save_now", "Save now", id="dashboard.save_now"),
        Binding("p", "sample_now", "Sample now", id="dashboard.sample_now"),
        Binding("l", "toggle_log", "Log", id="dashboard.toggle_log"),
        Binding("c", "show_config", "Config", id="dashboard.config"),
        Binding("q", "leave", "Leave", id="dashboard.leave"),
    ]

    def __init__(
        self,
        cfg,
        config_path: Optional[Path],
        *,
        events_source: Optional[EventsSource] = None,
        commands: Optional[CommandSink] = None,
        clock: Callable[[], float] = time.time,
        bell: Optional[bool] = None,
        nvml: bool = True,
        output_dir: Optional[str | Path] = None,
        name: Optional[str] = None,
    ) -> None:
        """Without `events_source` the screen runs `engine.run(cfg, …)` itself; with one it
        shows those events and sends stop / save / sample through `commands` (if given)."""
        super().__init__(name=name)
        self.cfg = cfg
        self.config_path = Path(config_path) if config_path else None
        self.events_source = events_source
        self.owns_run = events_source is None
        self.control = RunControl()
        self._commands = commands
        self.clock = clock
        self.bell_enabled = bell_wanted(bell)
        self._nvml_wanted = nvml
        self._nvml: Optional[NvmlProbe] = None
        if output_dir is None:
            output_dir = cfg.saving.output_dir if cfg is not None else ""
        self.model = RunModel(output_dir=str(output_dir), config_path=str(self.config_path or ""))
        self.view: RunView = self.model.view(clock())
        self.result = None  # engine.train.run's RunResult when this screen owned the run
        self.stopping = False
        self.source_ended = False
        self._leave_when_done = False
        self._halt_follow = threading.Event()
        self._render_timer: Optional[Timer] = None
        self._last_render = 0.0
        self._drawn = False

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def watching(cls, output_dir: str | Path, **kwargs) -> "DashboardScreen":
        """The dashboard of a run another process writes into `output_dir`."""
        from engine.control.command_file import send_command
        from engine.events.follow import follow_events

        folder = Path(output_dir)
        config_path = folder / "config.toml"
        cfg = _load_config_quietly(config_path)

        def source(stop: threading.Event) -> Iterable[Event]:
            return follow_events(folder, stop=stop)

        def commands(command: str) -> None:
            send_command(folder, command, sender="sdxl-tui watch")

        return cls(cfg, config_path if config_path.exists() else None,
                   events_source=source, commands=commands, output_dir=folder, **kwargs)

    def compose(self) -> ComposeResult:
        """Lay out the header, final banner, progress, memory, loss chart, sample, checkpoints, warnings and log."""
        yield Static(id="run-header")
        yield Static(id="final-banner")
        with Horizontal(id="top-row"):
            yield RunStatus(id="run-status")
            yield MemoryGauge(id="memory")
        with Horizontal(id="middle-row"):
            yield LossChart(id="loss-chart")
            yield SamplePreview(id="sample")
        with Horizontal(id="bottom-row"):
            yield Static(id="checkpoints")
            yield Static(id="warnings")
        yield LogPane(id="log")
        yield Footer()

    def on_mount(self) -> None:
        """Title the panels, draw once, start the run (or follow the watched one) and the 1 s tick."""
        self.query_one("#checkpoints").border_title = "Checkpoints"
        self.query_one("#warnings").border_title = "Warnings"
        self.query_one("#run-status").border_title = "Progress"
        self._render_view()
        if self.owns_run:
            # Libraries under the engine print (warnings, download notes): into the log pane,
            # not over the screen.
            self.app.begin_capture_print(self)
            self._run_engine()
        else:
            self._follow_events()
        self.set_interval(1.0, self._tick)

    def on_unmount(self) -> None:
        """Stop following, release print capture and NVML; a run this app owns is asked to stop and save."""
        self._halt_follow.set()
        if self.owns_run:
            self.app.end_capture_print(self)
        if self.owns_run and self.model.final is None:
            # The app is closing under a live run (ctrl+q): the engine thread outlives the UI,
            # so let it finish the step, save and end instead of training on unseen.
            self.control.request_stop("the dashboard was closed")
        if self._nvml is not None:
            self._nvml.close()

    # --- workers: they only post messages -------------------------------------------------

    @work(thread=True, exit_on_error=False, name="engine", group="dashboard")
    def _run_engine(self):
        # The module, not the `engine.train.run` package attribute: importing engine.train.run replaces
        # that attribute with the submodule, so it is a function only until the first run.
        from engine.train.run import run as run_engine

        return run_engine(self.cfg, self._post_event, self.control)

    @work(thread=True, exit_on_error=False, name="events", group="dashboard")
    def _follow_events(self) -> None:
        assert self.events_source is not None
        try:
            for event in self.events_source(self._halt_follow):
                self.post_message(EngineEvent(event))
        finally:
            self.post_message(EventsEnded())

    def _post_event(self, event: Event) -> None:
        self.post_message(EngineEvent(event))

    def on_worker_state_changed(self, message: Worker.StateChanged) -> None:
        """Keep the engine's result; log a worker's crash, and report it as the failure if the engine did not."""
        worker = message.worker
        if worker.name == "engine" and message.state == WorkerState.SUCCESS:
            self.result = worker.result
        elif message.state == WorkerState.ERROR:
            error = worker.error
            text = f"{type(error).__name__}: {error}"
            if worker.name != "engine":
                self._apply([Log(time=self.clock(), level="error", message=f"reading events stopped: {text}")])
                return
            events: list[Event] = [Log(time=self.clock(), level="error", message=f"the engine raised {text}")]
            if self.model.final is None:  # engine.train.run reports its own failures; this one got past it
                events.append(Failed(time=self.clock(), message=str(getattr(error, "message", error)),
                                     hint=getattr(error, "hint", "") or "see the log pane (l) for details",
                                     kind=type(error).__name__))
            self._apply(events)

    # --- events in ------------------------------------------------------------------------

    def on_print(self, event: Print) -> None:
        """Show a line printed by a library under the engine in the log pane (tqdm redraws dropped)."""
        line = printed_line(event.text)
        if line:
            self._apply([Log(time=self.clock(), level="warning" if event.stderr else "info", message=line)])

    def on_engine_event(self, message: EngineEvent) -> None:
        """Fold the engine events a worker posted and redraw."""
        self._apply(message.events)

    def on_events_ended(self, _: EventsEnded) -> None:
        """Note that the watched events.jsonl stopped being followed, and redraw."""
        self.source_ended = True
        self._render_view()

    def _apply(self, events: list[Event]) -> None:
        ended: Optional[Event] = None
        for event in events:
            self.model.apply(event)
            if isinstance(event, (Finished, Failed)):
                ended = event
        if ended is not None:
            self._on_run_ended(ended)
        elif all(is_metric(event) for event in events):
            self._render_soon()
        else:
            self._render_view()

    def _render_soon(self) -> None:
        """Metrics redraw at most RENDER_INTERVAL apart: folding is cheap, drawing is not,
        and nobody reads 100 loss values a second."""
        if self._render_timer is not None:
            return
        wait = self._last_render + RENDER_INTERVAL - time.monotonic()
        if wait <= 0:
            self._render_view()
        else:
            self._render_timer = self.set_timer(wait, self._render_view)

    def _on_run_ended(self, event: Event) -> None:
        self.stopping = False
        # An old run opened as a report is not news: only an ending seen as it happens rings.
        live = self.owns_run or abs(self.clock() - event.time) < LIVE_ENDING_SECONDS
        if self.bell_enabled and live:
            self.app.bell()
            self._desktop_notification(final_lines(self.model.view())[0][0])
        self.refresh_bindings()
        self._render_view()
        if self._leave_when_done:
            self.dismiss(self.view.final)

    def _desktop_notification(self, text: str) -> None:
        """OSC 9: a desktop notification in terminals that support it (iTerm2, WezTerm,
        Windows Terminal...); others ignore the sequence. Written the way App.bell() is."""
        app = self.app
        driver = getattr(app, "_driver", None)
        if not app.is_headless and driver is not None:
            clean = "".join(ch for ch in text if ch.isprintable())
            driver.write(f"\x1b]9;sdxl-tui: {clean}\x07")

    def _tick(self) -> None:
        """Once a second: ETA countdown, elapsed time, a quiet run's age, the card's memory."""
        if self.view.running:
            self._render_view()
        self._poll_card()

    def _poll_card(self) -> None:
        memory = self.view.memory
        if not self._nvml_wanted or memory is None or not memory.device.startswith("cuda"):
            return
        if self._nvml is None:
            self._nvml = NvmlProbe()
        self.query_one(MemoryGauge).show_card(self._nvml.usage(memory.device))

    def _render_view(self) -> None:
        if self._render_timer is not None:
            self._render_timer.stop()
            self._render_timer = None
        self._last_render = time.monotonic()
        previous, view = self.view, self.model.view(self.clock())
        self.view = view
        # Only what changed is redrawn, and fixed-size panels skip the layout pass: a full
        # relayout repaints the whole screen, which is most of the cost of a frame.
        self.query_one("#run-header", Static).update(header_text(view, self.mode_label, self.stopping), layout=False)
        if view.final != previous.final or not self._drawn:
            banner = self.query_one("#final-banner", Static)
            banner.display = view.final is not None
            if view.final is not None:
                banner.set_class(view.final.status == "failed", "failed")
                banner.update(final_text(view))
        self.query_one(RunStatus).show(view)
        self.query_one(MemoryGauge).show(view)
        self.query_one(LossChart).show(view)
        self.query_one(SamplePreview).show(view.latest_sample, view.output_dir)
        if view.checkpoints != previous.checkpoints or not self._drawn:
            self.query_one("#checkpoints", Static).update(checkpoints_text(view))
        if view.warnings != previous.warnings or not self._drawn:
            self.query_one("#warnings", Static).update(warnings_text(view))
        self.query_one(LogPane).show(view)
        self._drawn = True

    @property
    def mode_label(self) -> str:
        """The header's mode tag: " training " (this app runs it), " watching " or " report " (ended)."""
        if self.owns_run:
            return " training "
        return " report " if self.view.final is not None else " watching "

    def action_toggle_log(self) -> None:
        """`l`: show or hide the log pane."""
        log = self.query_one(LogPane)
        log.display = not log.display


def printed_line(text: str) -> str:
    """What a captured print says, without progress-bar redraws (tqdm's `\r…%|` frames)."""
    text = text.rsplit("\r", 1)[-1].strip()
    return "" if "%|" in text else text


def _load_config_quietly(path: Path):
    """The run's config if it loads; the watch view works without it (only `c` needs it)."""
    if not path.exists():
        return None
    try:
        from engine.config.toml_file import load_config

        return load_config(path)
    except Exception:
        return None
