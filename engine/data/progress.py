"""Progress of a long data phase (caching): a Phase event, then throttled PhaseProgress events
with the rate and ETA, and the stop check between items."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

PROGRESS_INTERVAL_S = 0.25


def progress_rate(done: int, total: int, elapsed: float) -> tuple[float, Optional[float]]:
    """(items per second since the phase began, seconds left at that rate); (0, None) before
    anything is known. The mean over the whole phase: steadier than the last interval's."""
    if done <= 0 or elapsed <= 0:
        return 0.0, None
    rate = done / elapsed
    return rate, max(0.0, (total - done) / rate)


@dataclass
class Progress:
    """Phase + throttled PhaseProgress events; stop checks between items."""
    emit: Callable[[Any], None]
    name: str
    total: int
    control: Any = None
    done: int = 0
    unit: str = "images"
    _last: float = field(default=0.0, repr=False)
    _began: float = field(default=0.0, repr=False)

    def start(self, detail: str = "") -> None:
        """Start the phase: emit its Phase event (with `detail`) and start the rate clock."""
        from engine.events.types import Phase

        self._began = time.time()
        self.emit(Phase(time=self._began, name=self.name, total=self.total, detail=detail))

    def advance(self, count: int = 1) -> None:
        """Count `count` more items done; emit PhaseProgress (items/s, ETA in seconds) at most every
        PROGRESS_INTERVAL_S seconds, and always for the last item.
        """
        from engine.events.types import PhaseProgress

        self.done += count
        now = time.time()
        if self.done >= self.total or now - self._last >= PROGRESS_INTERVAL_S:
            self._last = now
            rate, eta = progress_rate(self.done, self.total, now - (self._began or now))
            self.emit(PhaseProgress(time=now, name=self.name, done=self.done, total=self.total, unit=self.unit,
                                    rate=rate, eta_seconds=eta))

    def log(self, message: str) -> None:
        """Emit an info-level Log event with `message`."""
        from engine.events.types import Log

        self.emit(Log(time=time.time(), message=message))

    @property
    def stop_requested(self) -> bool:
        """True once the run's control (if any) was asked to stop: the phase should end between items."""
        return bool(self.control is not None and self.control.stop_requested)
