"""How the run's figures are written for a person: rates, durations, bytes, learning rates,
losses, paths. Shared by the dashboard, the console view and `watch` (through sdxl_tui.run_model)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from engine.events import types as ev
from engine.units import human_bytes


def format_rate(seconds_per_step: float) -> str:
    """tqdm's convention: it/s while faster than one step a second, s/it once slower."""
    if seconds_per_step <= 0:
        return "–"
    if seconds_per_step >= 1.0:
        return f"{seconds_per_step:.2f} s/it"
    return f"{1.0 / seconds_per_step:.2f} it/s"


def format_duration(seconds: Optional[float]) -> str:
    """Seconds as "m:ss", "h:mm:ss" or "Nd hh:mm:ss" (rounded, negatives as 0); "–" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d {hours % 24:02d}:{minutes:02d}:{secs:02d}"
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_bytes(count: Optional[int]) -> str:
    """A byte count in the engine's one unit (engine.units.human_bytes); "–" when unknown."""
    return "–" if count is None else human_bytes(count)


def format_lr(value: float) -> str:
    """A learning rate in two-decimal scientific notation ("1.00e-04"); "0" for zero."""
    return f"{value:.2e}" if value else "0"


def format_loss(value: Optional[float]) -> str:
    """A loss to four decimals; "nan" / "inf" as such, "–" when there is none yet."""
    if value is None:
        return "–"
    return f"{value:.4f}" if math.isfinite(value) else str(value)


def validation_text(event: ev.Validation) -> str:
    """"validation loss 0.1234 at step 200 (end of epoch 2, 3 batches)": the log pane and `watch`."""
    when = f"end of epoch {event.epoch}" if event.kind == "epoch" else f"epoch {event.epoch}"
    return (f"validation loss {format_loss(event.loss)} at step {event.step} "
            f"({when}, {event.batches} batch{'' if event.batches == 1 else 'es'})")


def plural(count: int, word: str) -> str:
    """"1 sample", "3 samples": `count` and `word`, with an s unless the count is 1."""
    return f"{count} {word}" + ("" if count == 1 else "s")


def display_path(path: str, output_dir: str) -> str:
    """Paths inside the output dir are shown relative to it (every view names the dir once)."""
    try:
        return str(Path(path).relative_to(output_dir)) if output_dir else path
    except ValueError:
        return path
