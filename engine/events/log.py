"""Every event a run emits, appended to `output_dir/events.jsonl` (one JSON object a line),
plus TensorBoard scalars for Step events when `log_with = "tensorboard"`.

The JSONL file is append-only and flushed per line, so `sdxl-tui watch` and the TUI can follow
a run started elsewhere, and a crash loses at most the line being written.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from engine.events.types import Event, Step

EVENTS_FILE = "events.jsonl"


class EventLog:
    """Appends every event to output_dir/events.jsonl (and Step scalars to TensorBoard); a failed write is kept in
    `error`, later events are dropped."""
    def __init__(self, output_dir: Path, tensorboard_dir: Optional[Path] = None) -> None:
        self.path = Path(output_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self.error: Optional[OSError] = None  # the first write that failed (e.g. disk full); later events are dropped
        self._tb = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

    def __call__(self, event: Event) -> None:
        if self._file.closed or self.error is not None:
            return
        try:
            self._file.write(event.to_json() + "\n")
            self._file.flush()
        except OSError as exc:
            # A full disk must not turn into a traceback here: the run goes on to its next save,
            # whose space check stops it with a DiskFullError the other sinks still show.
            self.error = exc
            return
        if self._tb is not None and isinstance(event, Step):
            self._write_scalars(event)

    def _write_scalars(self, step: Step) -> None:
        self._tb.add_scalar("loss/current", step.loss, step.step)
        self._tb.add_scalar("loss/average", step.smoothed_loss, step.step)
        for group, lr in step.lr.items():
            self._tb.add_scalar(f"lr/{group}", lr, step.step)
        self._tb.add_scalar("speed/seconds_per_step", step.seconds_per_step, step.step)
        self._tb.add_scalar("speed/images_per_second", step.images_per_second, step.step)
        if step.memory.peak is not None:
            self._tb.add_scalar("memory/peak_bytes", step.memory.peak, step.step)

    def close(self) -> None:
        """Close the JSONL file and the TensorBoard writer (a close that fails on a full disk is ignored)."""
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # the buffered tail of a full disk
                pass
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def tensorboard_dir(logging_cfg, output_dir: Path, run_stamp: str) -> Optional[Path]:
    """Where TensorBoard scalars go, or None when not asked for (sd-scripts: logging_dir/prefix+time)."""
    if logging_cfg.log_with != "tensorboard":
        return None
    base = Path(logging_cfg.logging_dir) if logging_cfg.logging_dir else Path(output_dir) / "logs"
    return base / f"{logging_cfg.log_prefix}{run_stamp}"


def tee(*sinks: Callable[[Event], None]) -> Callable[[Event], None]:
    """One emit that hands each event to every sink in order (the log first, so it is never missed)."""

    def emit(event: Event) -> None:
        for sink in sinks:
            sink(event)

    return emit
