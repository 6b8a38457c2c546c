"""Memory: CUDA allocated / reserved / peak against the card, or process RSS on CPU.

Where NVML is importable (nvidia-ml-py) the gauge also shows the whole card's use, which
includes other processes: the figure that decides whether the next allocation fits.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from engine.events.types import Memory
from sdxl_tui.run_model import RunView, format_bytes, sparkline

BAR_WIDTH = 20


@dataclass(frozen=True)
class CardUsage:
    """A card's memory use from NVML in bytes (every process on it, not only this run)."""
    used: int
    total: int
    name: str = ""


class NvmlProbe:
    """Reads a card's memory use through NVML; every failure means "not available"."""

    def __init__(self) -> None:
        self._nvml = None
        try:
            import pynvml  # from nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception:  # no library, no driver, no GPU: all the same to the gauge
            self._nvml = None

    @property
    def available(self) -> bool:
        """True when NVML answered at start."""
        return self._nvml is not None

    def usage(self, device: str) -> Optional[CardUsage]:
        """Memory use of CUDA device `device` ("cuda" or "cuda:N"); None for another device or when NVML fails."""
        if self._nvml is None or not device.startswith("cuda"):
            return None
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        try:
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            info = self._nvml.nvmlDeviceGetMemoryInfo(handle)
            name = self._nvml.nvmlDeviceGetName(handle)
        except Exception:
            return None
        return CardUsage(int(info.used), int(info.total), name.decode() if isinstance(name, bytes) else str(name))

    def close(self) -> None:
        """Shut NVML down (idempotent; failures ignored)."""
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None


def bar(value: Optional[int], total: Optional[int], width: int = BAR_WIDTH) -> Text:
    """A bar of `width` cells for value / total, green to yellow (> 80 %) to red (> 92 %); empty when either is
    unknown."""
    if value is None or not total:
        return Text("")
    fraction = max(0.0, min(1.0, value / total))
    filled = int(round(fraction * width))
    style = "red" if fraction > 0.92 else "yellow" if fraction > 0.8 else "green"
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="grey35")


def memory_table(memory: Memory, card: Optional[CardUsage], bar_width: int = BAR_WIDTH) -> Table:
    """Memory rows: allocated, reserved and peak against the card's total on CUDA (and NVML's whole-card use), else
    the process's RSS."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="grey70")
    table.add_column()
    table.add_column(justify="right")
    if memory.device.startswith("cuda"):
        total = memory.total or (card.total if card else None)
        for name, value in (("allocated", memory.allocated), ("reserved", memory.reserved), ("peak", memory.peak)):
            table.add_row(name, bar(value, total, bar_width), format_bytes(value))
        if card is not None:  # NVML: every process on the card, not only this run
            table.add_row("whole card", bar(card.used, card.total, bar_width), format_bytes(card.used))
        table.add_row("card total", Text(card.name if card else "", style="grey50"), format_bytes(total))
    else:
        table.add_row("process RSS", bar(memory.rss, memory.total, bar_width), format_bytes(memory.rss))
        if memory.total:
            table.add_row("system", Text(""), format_bytes(memory.total))
    return table


class MemoryGauge(Static):
    """Gauge bars plus a sparkline of the last readings."""

    DEFAULT_CSS = """
    MemoryGauge { height: auto; min-height: 5; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("waiting for memory figures…", id=id)
        self.border_title = "Memory"
        self._key: tuple = ()
        self._card: Optional[CardUsage] = None
        self._view: Optional[RunView] = None
        self._rows: tuple = ()

    def show(self, view: RunView) -> None:
        """Redraw for `view`."""
        self._view = view
        self._redraw()

    def on_resize(self) -> None:
        """Redraw at the new width."""
        self._redraw()

    def show_card(self, card: Optional[CardUsage]) -> None:
        """Redraw with the card's NVML figures (None when not available)."""
        self._card = card
        self._redraw()

    def _redraw(self) -> None:
        view = self._view
        if view is None or view.memory is None:
            return
        key = (view.memory, view.memory_history, self._card, self.content_size.width)
        if key == self._key:
            return
        self._key = key
        self.border_title = f"Memory ({view.memory.device})"
        width = self.content_size.width or 50
        history = sparkline([float(v) for v in view.memory_history], max(8, width))
        # label ~11 + value ~9 + gaps: the bar takes what is left
        table = memory_table(view.memory, self._card, max(6, min(BAR_WIDTH, width - 23)))
        rows = (len(table.rows), view.memory.device)  # a relayout only when the rows change
        self.update(Group(table, Text(history, style="dark_cyan")), layout=rows != self._rows)
        self._rows = rows
