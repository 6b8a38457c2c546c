"""`SaveProgress`: the engine saying "saving now, x% done" to whoever must decide whether a
second Ctrl-C may wait for the save (engine/control/signals.py) or show it (the dashboard).

The saving code announces the parts it will write with their sizes (`begin`), marks each one
written (`part_done`), and ends with `end`. It also records the temporary paths it writes,
so an abandoned save can be cleaned up. Thread-safe; one save at a time.

`SDXL_TUI_TEST_SAVE_DELAY` (seconds) makes every part of a save take at least that long: a
test hook to kill a real process in the middle of a save. It is read at save time.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

TEST_DELAY_ENV = "SDXL_TUI_TEST_SAVE_DELAY"


@dataclass
class SaveProgress:
    """The save in progress (what, bytes done of total, its temp files), read by the signal handler to decide whether
    to wait for it. Thread-safe."""
    # reentrant: the signal handler reads it on the main thread, maybe while that thread holds it
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    what: str = ""
    started: Optional[float] = None
    total_bytes: int = 0
    done_bytes: int = 0
    temp_paths: list = field(default_factory=list)
    _parts: dict = field(default_factory=dict, repr=False)

    def begin(self, what: str, parts: dict[str, int]) -> None:
        """A save of `what` starts; `parts` maps each piece to its size in bytes (estimates)."""
        with self._lock:
            self.what, self.started = what, time.monotonic()
            self._parts = {name: max(1, int(size)) for name, size in parts.items()}
            self.total_bytes, self.done_bytes = sum(self._parts.values()), 0
            self.temp_paths = []

    def writing(self, temp_path: Path) -> None:
        """A temporary file or folder (or a glob pattern of its name) this save writes."""
        with self._lock:
            self.temp_paths.append(Path(temp_path))

    def part_done(self, name: str) -> None:
        """Count piece `name` as written (its estimated bytes)."""
        delay = _test_delay()
        if delay:
            time.sleep(delay)
        with self._lock:
            self.done_bytes += self._parts.pop(name, 0)

    def end(self) -> None:
        """No save in progress any more."""
        with self._lock:
            self.what, self.started, self.temp_paths, self._parts = "", None, [], {}
            self.total_bytes = self.done_bytes = 0

    @property
    def active(self) -> bool:
        """True while a save is in progress."""
        return self.started is not None

    @property
    def fraction(self) -> float:
        """0..1 of the bytes of this save written (1.0 when no save runs)."""
        with self._lock:
            if self.started is None or not self.total_bytes:
                return 1.0
            return self.done_bytes / self.total_bytes

    def seconds_left(self) -> float:
        """Remaining time at the rate so far (infinite before the first part is done)."""
        with self._lock:
            if self.started is None:
                return 0.0
            if not self.done_bytes:
                return float("inf")
            elapsed = time.monotonic() - self.started
            return elapsed * (self.total_bytes - self.done_bytes) / self.done_bytes

    def nearly_done(self, fraction: float = 0.9, seconds: float = 2.0) -> bool:
        """Worth waiting for: most of it written, or it will end within `seconds`."""
        return not self.active or self.fraction >= fraction or self.seconds_left() <= seconds

    def remove_temp_files(self) -> list[Path]:
        """Delete the temporary files of an abandoned save (final names are never touched)."""
        import shutil

        with self._lock:
            paths = list(self.temp_paths)
        removed = []
        expanded = []
        for path in paths:  # a pattern stands for a temporary name chosen by mkstemp
            expanded.extend(path.parent.glob(path.name) if "*" in path.name else [path])
        for path in expanded:
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
                removed.append(path)
            except OSError:
                pass
        return removed


def _test_delay() -> float:
    try:
        return float(os.environ.get(TEST_DELAY_ENV, "") or 0)
    except ValueError:
        return 0.0
