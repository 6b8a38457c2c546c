"""Loss over every step, raw and smoothed, and the validation loss, drawn in braille dots (2x4 per cell).

Drawn by hand so it works in any terminal with a Unicode font and needs no plotting
package. Raw loss is drawn as a band (min..max of the steps in each dot column) so its
noise stays visible; the smoothed loss is a connected line on top of it, and the validation
loss (validation_split images, engine/train/validation.py) a second line in its own colour.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from rich.text import Text
from textual.widget import Widget

from sdxl_tui.run_model import RunView

# Braille dot bits by (column, row) inside one 2x4 cell.
_DOT_BITS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
RAW_STYLE = "#808080"  # hex: Textual markup (the legend) parses these too
SMOOTH_STYLE = "bold #1e90ff"
VALIDATION_STYLE = "bold #ffa500"
AXIS_STYLE = "#9e9e9e"
LABEL_WIDTH = 8


@dataclass
class _Column:
    low: float
    high: float
    total: float
    count: int


def _columns(steps: tuple[int, ...], values: tuple[float, ...], width: int,
             bounds: Optional[tuple[int, int]] = None) -> list[Optional[_Column]]:
    """Bucket points into `width` dot columns by their step number (`bounds`: the x range,
    first..last step by default)."""
    cols: list[Optional[_Column]] = [None] * width
    if not steps:
        return cols
    first, last = bounds or (steps[0], steps[-1])
    span = max(1, last - first)
    for step, value in zip(steps, values):
        index = max(0, min(width - 1, int(round((step - first) / span * (width - 1)))))
        col = cols[index]
        if col is None:
            cols[index] = _Column(value, value, value, 1)
        else:
            col.low, col.high = min(col.low, value), max(col.high, value)
            col.total += value
            col.count += 1
    return cols


def y_range(raw: tuple[float, ...], smooth: tuple[float, ...],
            validation: tuple[float, ...] = ()) -> tuple[float, float]:
    """Bounds that keep every smoothed and validation point and all but the extreme 1% of raw spikes."""
    ordered = sorted(raw)
    cut = len(ordered) // 100
    trimmed = ordered[cut:len(ordered) - cut] if cut else ordered
    values = [*trimmed, *smooth, *validation]
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5 * abs(low or 1.0), high + 0.5 * abs(high or 1.0)
    margin = (high - low) * 0.05
    return low - margin, high + margin


def plot(steps: tuple[int, ...], raw: tuple[float, ...], smooth: tuple[float, ...],
         width: int, height: int, validation: tuple[tuple[int, ...], tuple[float, ...]] = ((), ())) -> list[Text]:
    """`height` lines of `width` cells (labels included) plotting the series; `validation` is
    (steps, losses) of the validation loss, drawn over the same step axis."""
    plot_width = max(1, width - LABEL_WIDTH)
    rows, cols = height - 1, plot_width * 2
    if rows < 1 or not steps:
        return [Text("waiting for the first step…", style=AXIS_STYLE)]
    val_steps, val_values = validation
    low, high = y_range(raw, smooth, val_values)
    bounds = (min(steps[0], *val_steps[:1], steps[0]), max(steps[-1], *val_steps[-1:], steps[-1]))
    dots = rows * 4

    def dot_row(value: float) -> int:
        return max(0, min(dots - 1, int(round((high - value) / (high - low) * (dots - 1)))))

    raw_bits = [[0] * plot_width for _ in range(rows)]
    smooth_bits = [[0] * plot_width for _ in range(rows)]
    val_bits = [[0] * plot_width for _ in range(rows)]

    def fill(grid: list[list[int]], col: int, top: int, bottom: int) -> None:
        for r in range(min(top, bottom), max(top, bottom) + 1):
            grid[r // 4][col // 2] |= _DOT_BITS[col % 2][r % 4]

    for col, bucket in enumerate(_columns(steps, raw, cols, bounds)):
        if bucket is not None:
            fill(raw_bits, col, dot_row(bucket.high), dot_row(bucket.low))

    def line(grid: list[list[int]], xs: tuple[int, ...], ys: tuple[float, ...]) -> None:
        points = [(col, dot_row(bucket.total / bucket.count))
                  for col, bucket in enumerate(_columns(xs, ys, cols, bounds)) if bucket is not None]
        for (col0, row0), (col1, row1) in zip(points, points[1:]):  # a line, even between far points
            previous = row0
            for col in range(col0 + 1, col1 + 1):
                row = int(round(row0 + (row1 - row0) * (col - col0) / (col1 - col0)))
                fill(grid, col, row, previous)
                previous = row
        if points:
            fill(grid, points[0][0], points[0][1], points[0][1])

    line(smooth_bits, steps, smooth)
    line(val_bits, val_steps, val_values)

    lines = []
    for r in range(rows):
        label = _label(high - (high - low) * (r * 4) / (dots - 1)) if r in (0, rows // 2, rows - 1) else ""
        line = Text(f"{label:>{LABEL_WIDTH - 1}}┤" if label else " " * (LABEL_WIDTH - 1) + "│", style=AXIS_STYLE)
        # One span per run of same-styled cells: far fewer spans for the terminal to paint.
        run_chars: list[str] = []
        run_style = ""
        for c in range(plot_width):
            s_bits, r_bits, v_bits = smooth_bits[r][c], raw_bits[r][c], val_bits[r][c]
            style = VALIDATION_STYLE if v_bits else SMOOTH_STYLE if s_bits else RAW_STYLE if r_bits else ""
            if style != run_style and run_chars:
                line.append("".join(run_chars), style=run_style or None)
                run_chars = []
            run_style = style
            run_chars.append(chr(0x2800 | v_bits | s_bits | r_bits) if style else " ")
        if run_chars:
            line.append("".join(run_chars), style=run_style or None)
        lines.append(line)
    lines.append(_x_axis(bounds[0], bounds[1], plot_width))
    return lines


def _label(value: float) -> str:
    if not math.isfinite(value):
        return "?"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _x_axis(first: int, last: int, plot_width: int) -> Text:
    left, right = f"step {first}", str(last)
    gap = max(1, plot_width - len(left) - len(right))
    return Text(" " * (LABEL_WIDTH - 1) + "└" + left + " " * gap + right, style=AXIS_STYLE)


class LossChart(Widget):
    """Raw (grey band) and smoothed (blue line) loss, and the validation loss (orange line),
    always over the whole run."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 6; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Loss"
        self._view: Optional[RunView] = None

    def show(self, view: RunView) -> None:
        """Redraw for `view` when its loss or validation history changed."""
        old = self._view
        if old is not None and (old.loss_steps, old.loss, old.validation_steps) == \
                (view.loss_steps, view.loss, view.validation_steps):
            return
        self._view = view
        self.border_subtitle = _legend(view)
        self.refresh()

    def render(self) -> Text:
        """The loss plot (raw and smoothed against step) filling the widget, or a waiting line before the first step."""
        view = self._view
        width, height = self.content_size.width, self.content_size.height
        if view is None:
            return Text("waiting for the first step…", style=AXIS_STYLE)
        return Text("\n").join(plot(view.loss_steps, view.loss_raw, view.loss_smooth, width, height,
                                    (view.validation_steps, view.validation_losses)))


def _legend(view: RunView) -> str:
    if view.loss is None:
        return ""
    legend = f"[{RAW_STYLE}]raw {view.loss:.4f}[/]  [{SMOOTH_STYLE}]smoothed {view.smoothed_loss:.4f}[/]"
    if view.validation_loss is not None:
        legend += f"  [{VALIDATION_STYLE}]validation {view.validation_loss:.4f}[/]"
    return legend
