"""Text panels of the dashboard: the header line, progress and rates, checkpoints,
warnings, and the banner that says how the run ended and what it left behind."""
from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.events.types import TRAINING
from sdxl_tui.run_model import (
    RunView,
    display_path,
    final_lines,
    format_duration,
    format_loss,
    format_lr,
)

STALE_AFTER = 60.0  # seconds without an event before a watched run is called quiet


def _bar(fraction: float, width: int = 24) -> Text:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    style = "green" if fraction >= 1.0 else "dodger_blue1"
    return Text("━" * filled, style=style) + Text("━" * (width - filled), style="grey30")


def status_table(view: RunView, bar_width: int = 24) -> Table:
    """The status rows: phase, step progress bar (`bar_width` cells), time, epoch, speed, loss, learning rates."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="grey70", width=8)
    table.add_column()
    phase = view.phase
    if phase is not None and phase.name != TRAINING and view.final is None:
        row: list[RenderableType] = [Text(phase.label, style="bold")]
        if phase.total:
            row += [_bar(phase.fraction or 0.0, max(4, bar_width - 4)), Text(f"{phase.done}/{phase.total}")]
            if phase.rate_eta_text:
                row.append(Text(phase.rate_eta_text))
        if phase.detail:
            row.append(Text(phase.detail, style="grey50"))
        table.add_row("Phase", _inline(row))
    elif phase is not None:
        table.add_row("Phase", Text(phase.label, style="bold"))
    steps = Text(f"{view.step}/{view.total_steps or '?'}  {view.fraction:.0%}")
    table.add_row("Step", _inline([_bar(view.fraction, bar_width), steps]))
    timing = Text(f"ETA {format_duration(view.eta_seconds)}  " if view.running else "", style="bold")
    timing.append(f"elapsed {format_duration(view.elapsed)}", style="grey70")
    table.add_row("Time", timing)
    epochs = f"{view.epoch}/{view.total_epochs}" if view.total_epochs else str(view.epoch or "–")
    table.add_row("Epoch", Text(epochs))
    table.add_row("Speed", Text(f"{view.rate_text} · {view.images_per_second:.2f} images/s"
                                if view.seconds_per_step else "–"))
    table.add_row("Loss", Text(f"{format_loss(view.loss)}  (smoothed {format_loss(view.smoothed_loss)})"
                               if view.loss is not None else "–"))
    lr = "  ".join(f"{group} {format_lr(value)}" for group, value in view.lr)
    if view.weight_norms is not None:  # sd-scripts' "Keys Scaled" / "Average key norm"
        scaled, mean, _ = view.weight_norms
        lr = f"{lr or '–'}  · keys scaled {scaled}, mean norm {mean:.3f}"
    table.add_row("LR", Text(lr or "–"))
    return table


def _inline(parts: list[RenderableType]) -> Table:
    row = Table.grid(padding=(0, 1))
    for part in parts:
        row.add_column(no_wrap=True)
    row.add_row(*parts)
    return row


class RunStatus(Static):
    """Always the same seven rows (height fixed in CSS), so updates skip the layout pass."""

    def show(self, view: RunView) -> None:
        """Redraw for `view`, the bar as wide as the widget allows (6 to 24 cells)."""
        # label 8 + "12345/12345  100%" ~17 + gaps: the bar takes what is left, up to 24
        bar_width = max(6, min(24, (self.content_size.width or 60) - 28))
        self.update(status_table(view, bar_width), layout=False)

    def on_resize(self) -> None:
        """Redraw with the screen's current view at the new width."""
        view = getattr(self.screen, "view", None)
        if view is not None:
            self.show(view)


def header_text(view: RunView, mode: str, stopping: bool = False) -> Text:
    """One line: what this is, where it writes, and whether we own or watch it."""
    text = Text.assemble(("sdxl-tui ", "bold"), (mode, "reverse"), " ")
    text.append(view.output_dir or "(output dir not known yet)", style="cyan")
    if stopping and view.running:
        text.append("  stopping: finishing the step and saving…", style="bold yellow")
    elif view.running and view.last_event_at and view.now - view.last_event_at > STALE_AFTER:
        quiet = format_duration(view.now - view.last_event_at)
        text.append(f"  no events for {quiet}: the run may have ended without saying so", style="yellow")
    return text


def checkpoints_text(view: RunView, limit: int = 4) -> RenderableType:
    """The last `limit` saves, with a count of earlier ones."""
    if not view.checkpoints:
        return Text("none yet (s saves now)", style="grey50")
    lines = [Text.assemble((f"step {saved.step:>6} ", "grey70"), (f"{saved.kind:<5} ", "grey50"),
                           display_path(saved.path, view.output_dir))
             for saved in view.checkpoints[-limit:]]
    if len(view.checkpoints) > limit:
        lines.insert(0, Text(f"… {len(view.checkpoints) - limit} earlier", style="grey50"))
    return Group(*lines)


def warnings_text(view: RunView, limit: int = 3) -> RenderableType:
    """The last `limit` warnings, with a count of earlier ones."""
    if not view.warnings:
        return Text("none", style="grey50")
    lines = [Text(f"! {message}", style="yellow", overflow="ellipsis", no_wrap=True)
             for message in view.warnings[-limit:]]
    if len(view.warnings) > limit:
        lines.insert(0, Text(f"… {len(view.warnings) - limit} earlier (l shows the log)", style="grey50"))
    return Group(*lines)


def final_text(view: RunView) -> RenderableType:
    """How the run ended, as styled lines."""
    return Group(*(Text(text, style=style) for text, style in final_lines(view)))
