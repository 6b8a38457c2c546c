"""Read `events.jsonl` from the start and follow it while the run appends to it.

The engine appends one JSON object per line; a reader may see the last line half-written,
so a line only counts once its newline has arrived. A complete line that does not parse
(a crash mid-write followed by a restart) is skipped rather than ending the replay.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator, Optional

from engine.events.types import Event, Failed, Finished, event_from_json

EVENTS_FILE = "events.jsonl"


def events_path(output_dir: str | Path) -> Path:
    """The events.jsonl of a run's output folder."""
    return Path(output_dir) / EVENTS_FILE


def parse_line(line: bytes) -> Optional[Event]:
    """The event in one JSONL line, or None for a line that is not one (a half-written or foreign line)."""
    try:
        return event_from_json(line.decode("utf-8"))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


class EventFileReader:
    """Incremental reader: each `read_new()` returns the events completed since the last call."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def read_new(self) -> list[Event]:
        """The events appended since the last call; a half-written last line waits for the next call, and a replaced
        file is read from the top."""
        try:
            with open(self.path, "rb") as handle:
                size = handle.seek(0, 2)
                if size < self._offset:  # the file was replaced: start again
                    self._offset, self._partial = 0, b""
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # b"" when the chunk ended on a newline
        return [event for event in map(parse_line, lines) if event is not None]


def is_final(event: Event) -> bool:
    """True for the event that ends a run (Finished or Failed)."""
    return isinstance(event, (Finished, Failed))


def read_events(output_dir: str | Path) -> list[Event]:
    """Every complete event written so far (a one-shot replay)."""
    return EventFileReader(events_path(output_dir)).read_new()


def follow_events(
    output_dir: str | Path,
    *,
    stop: Optional[threading.Event] = None,
    poll_interval: float = 0.2,
    until_final: bool = True,
) -> Iterator[Event]:
    """Replay from the first event, then wait for more until the run ends or `stop` is set.

    Waits for the file to appear, so it can be attached before the run has begun writing.
    A Finished/Failed followed by more events (the run was resumed into the same folder) does
    not end the replay; one that is the newest line does.
    """
    stop = stop or threading.Event()
    reader = EventFileReader(events_path(output_dir))
    while not stop.is_set():
        batch = reader.read_new()
        for event in batch:
            yield event
        if until_final and batch and is_final(batch[-1]):
            return
        if not batch:
            stop.wait(poll_interval)


def last_event_age(output_dir: str | Path, now: Optional[float] = None) -> Optional[float]:
    """Seconds since events.jsonl last changed, or None when it does not exist."""
    try:
        mtime = events_path(output_dir).stat().st_mtime
    except FileNotFoundError:
        return None
    return (time.time() if now is None else now) - mtime
