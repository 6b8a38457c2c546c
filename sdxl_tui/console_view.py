"""The headless twin of the dashboard, for `sdxl-tui train`.

`ConsoleView`: a compact Rich Live panel (phase, progress + ETA, loss sparkline, rate,
memory) for a terminal; `PlainView`: one plain line per Step and per notable event, for logs
and pipes. Both are callables taking an engine event (pass one as `emit`), both fold events
through the same RunModel as the dashboard, and neither imports Textual.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, Optional, TextIO

from rich.console import Console, Group
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from engine.events import types as ev
from sdxl_tui.run_model import (
    RunModel,
    RunView,
    display_path,
    final_lines,
    format_bytes,
    format_duration,
    format_loss,
    format_lr,
    resample,
    sparkline,
    validation_text,
)

Clock = Callable[[], float]
PLAIN_PROGRESS_INTERVAL_S = 2.0  # plain mode: a progress line at most this often (and the last)


def progress_line(event: ev.PhaseProgress) -> str:
    """"Caching latents: 312/1000 images, 12.3/s, eta 56s" (rate and ETA once known)."""
    from sdxl_tui.run_model import PhaseView

    unit = f" {event.unit}" if event.unit else ""
    parts = [f"{PhaseView(event.name).label}: {event.done}/{event.total}{unit}"]
    if event.detail:
        parts.append(event.detail)
    if event.rate > 0:
        parts.append(f"{event.rate:.1f}/s" if event.rate >= 1 else f"{1 / event.rate:.1f}s each")
    if event.eta_seconds is not None and event.done < event.total:
        parts.append(f"eta {format_duration(event.eta_seconds)}")
    return ", ".join(parts)


def event_line(event: ev.Event, output_dir: str = "") -> Optional[tuple[str, str]]:
    """A notable non-metric event as one (text, style) line; None for those not worth a line."""
    if isinstance(event, ev.RunStarted):
        resumed = f", resuming at step {event.resumed_from_step}" if event.resumed_from_step else ""
        return (f"run: {event.total_steps} steps, {event.total_epochs} epochs, batch {event.batch_size}"
                f"{resumed} -> {event.output_dir}", "bold")
    if isinstance(event, ev.Phase) and event.name not in (ev.TRAINING, ev.FINISHED, ev.FAILED):
        from sdxl_tui.run_model import PhaseView

        total = f" ({event.total})" if event.total else ""
        detail = f": {event.detail}" if event.detail else ""
        return f"{PhaseView(event.name).label}{total}{detail}", ""
    if isinstance(event, ev.Validation):
        return validation_text(event), "magenta"
    if isinstance(event, ev.Saved):
        return f"saved {event.kind} at step {event.step}: {display_path(event.path, output_dir)}", "green"
    if isinstance(event, ev.Sample):
        return f"sample at step {event.step}: {display_path(event.path, output_dir)}", "cyan"
    if isinstance(event, ev.Warning_):
        return f"warning: {event.message}", "yellow"
    if isinstance(event, ev.Log) and event.level != "debug":
        return event.message, "red" if event.level == "error" else ""
    return None


def step_line(view: RunView) -> str:
    """One plain status line: step, epoch, loss (and its average), learning rates, speed, ETA, memory."""
    parts = [f"step {view.step}/{view.total_steps}"]
    if view.total_epochs:
        parts.append(f"epoch {view.epoch}/{view.total_epochs}")
    parts.append(f"loss {format_loss(view.loss)} (avg {format_loss(view.smoothed_loss)})")
    parts += [f"lr {group}={format_lr(value)}" for group, value in view.lr[:2]]
    parts.append(view.rate_text)
    parts.append(f"{view.images_per_second:.2f} img/s")
    parts.append(f"eta {format_duration(view.eta_seconds)}")
    if view.memory_figure is not None:
        parts.append(f"mem {format_bytes(view.memory_figure)}")
    return "  ".join(parts)


class PlainView:
    """Plain lines, flushed one by one, for output that is not a terminal."""

    def __init__(self, stream: TextIO, clock: Clock = time.time, output_dir: str = "") -> None:
        self.stream, self.clock = stream, clock
        self.model = RunModel(output_dir=output_dir)
        self._lock = threading.Lock()
        self._progress_at: dict[str, float] = {}

    def _progress_due(self, event: ev.PhaseProgress) -> bool:
        now = self.clock()
        last = self._progress_at.get(event.name)
        if event.done >= event.total or last is None or now - last >= PLAIN_PROGRESS_INTERVAL_S:
            self._progress_at[event.name] = now
            return True
        return False

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self.model.apply(event)
            view = self.model.view(self.clock())
            if isinstance(event, ev.Step):
                self._write(step_line(view))
            elif isinstance(event, ev.PhaseProgress):
                if self._progress_due(event):
                    self._write(progress_line(event))
            elif isinstance(event, (ev.Finished, ev.Failed)):
                for text, _ in final_lines(view):
                    self._write(text)
            else:
                line = event_line(event, view.output_dir)
                if line is not None:
                    self._write(line[0])

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to close (plain lines need no clean-up)."""
        pass

    def __enter__(self) -> "PlainView":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def console_panel(view: RunView, width: int = 80) -> Panel:
    """The live panel for a terminal run (phase, step progress and ETA, speed, loss with its sparkline,
    memory), `width` columns wide."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="grey70", no_wrap=True)
    table.add_column(no_wrap=True)
    phase = view.phase
    if phase is not None and phase.name != ev.TRAINING and phase.total:
        unit = f" {phase.unit}" if phase.unit else ""
        table.add_row("phase", Text(f"{phase.label}  {phase.done}/{phase.total}{unit}  {phase.fraction or 0:.0%}  "
                                    f"{phase.rate_eta_text}".rstrip()))
    elif phase is not None:
        table.add_row("phase", Text(phase.label))
    bar_width = max(10, min(40, width - 40))
    progress = Table.grid(padding=(0, 1))
    for _ in range(3):
        progress.add_column(no_wrap=True)
    progress.add_row(ProgressBar(total=max(1, view.total_steps), completed=view.step, width=bar_width,
                                 complete_style="dodger_blue1", finished_style="green"),
                     f"{view.step}/{view.total_steps or '?'}",
                     f"ETA {format_duration(view.eta_seconds)}  elapsed {format_duration(view.elapsed)}")
    table.add_row("step", progress)
    epoch = f"epoch {view.epoch}/{view.total_epochs}  " if view.total_epochs else ""
    table.add_row("rate", Text(f"{epoch}{view.rate_text}  {view.images_per_second:.2f} images/s"))
    spark_width = max(10, width - 45)
    spark = sparkline(resample(view.loss_smooth, spark_width), spark_width)  # the whole run
    table.add_row("loss", Text.assemble(f"{format_loss(view.loss)} (avg {format_loss(view.smoothed_loss)}) ",
                                        (spark, "dodger_blue1")))
    if view.validation_loss is not None:
        table.add_row("validation", Text(f"{format_loss(view.validation_loss)} (validation_split images)"))
    if view.memory is not None:
        table.add_row("memory", Text(memory_summary(view.memory)))
    return Panel(table, title=f"sdxl-tui  {view.output_dir}", title_align="left", border_style="grey50", width=width)


def memory_summary(memory: ev.Memory) -> str:
    """Memory as one line: allocated, reserved and peak of the card's total on CUDA, else the process's RSS."""
    if memory.allocated is not None:
        of = f" of {format_bytes(memory.total)}" if memory.total else ""
        return (f"{format_bytes(memory.allocated)} allocated, {format_bytes(memory.reserved)} reserved, "
                f"peak {format_bytes(memory.peak)}{of} ({memory.device})")
    return f"RSS {format_bytes(memory.rss)} ({memory.device})"


class ConsoleView:
    """A Rich Live panel redrawn a few times a second; notable events print above it."""

    def __init__(self, console: Console, clock: Clock = time.time, refresh_per_second: float = 4,
                 output_dir: str = "") -> None:
        from rich.live import Live

        self.console, self.clock = console, clock
        self.model = RunModel(output_dir=output_dir)
        self._lock = threading.Lock()
        self._live = Live(console=console, refresh_per_second=refresh_per_second, transient=True,
                          get_renderable=self._renderable)
        self._started = False

    def _renderable(self) -> Panel:
        with self._lock:
            view = self.model.view(self.clock())
        return console_panel(view, min(self.console.width, 100))

    def __call__(self, event: ev.Event) -> None:
        with self._lock:
            self.model.apply(event)
            output_dir = self.model.view().output_dir
        if not self._started:
            self._live.start()
            self._started = True
        if isinstance(event, (ev.Finished, ev.Failed)):
            self.close()
            with self._lock:
                view = self.model.view(self.clock())
            self.console.print(console_panel(view, min(self.console.width, 100)))
            self.console.print(Group(*(Text(text, style=style) for text, style in final_lines(view))))
            return
        line = event_line(event, output_dir)
        if line is not None:
            self.console.print(Text(line[0], style=line[1]))

    def close(self) -> None:
        """Stop the live panel (idempotent)."""
        if self._started:
            self._live.stop()
            self._started = False

    def __enter__(self) -> "ConsoleView":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def make_view(stream: Optional[TextIO] = None, *, clock: Clock = time.time,
              output_dir: str | os.PathLike = "") -> "ConsoleView | PlainView":
    """The live panel for a terminal, plain lines for anything else (files, pipes, TERM=dumb).

    `output_dir` (the config's) names the folder in messages before the run reports it itself.
    """
    output_dir = str(output_dir)
    stream = stream or sys.stdout
    is_terminal = hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"
    if is_terminal:
        return ConsoleView(Console(file=stream), clock=clock, output_dir=output_dir)
    return PlainView(stream, clock=clock, output_dir=output_dir)
