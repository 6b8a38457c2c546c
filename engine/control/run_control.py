"""RunControl: commands going down into a running engine (stop, save now, sample now).

Thread-safe: the TUI thread, a signal handler and the watch-file poller may all call it
while the training thread reads it between steps.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

SAVE_NOW = "save_now"
SAMPLE_NOW = "sample_now"


@dataclass
class RunControl:
    """Commands to a running training, safe from any thread: stop (with its reason), save now, sample now."""
    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._commands: "queue.SimpleQueue[str]" = queue.SimpleQueue()
        self.stop_reason = ""
        # True while nothing is trained yet (config checks, model loading, caching): a stop
        # signal then ends the process at once instead of waiting for a step that has not begun
        self.interruptible = False
        from engine.control.save_progress import SaveProgress

        self.saving = SaveProgress()  # "saving now, x% done", updated by the saving code

    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the current step, save, and end."""
        self.stop_reason = self.stop_reason or reason
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once a stop was requested; the loop stops after the current step and saves."""
        return self._stop.is_set()

    def save_now(self) -> None:
        """Ask for a LoRA and state save after the current step."""
        self._commands.put(SAVE_NOW)

    def sample_now(self) -> None:
        """Ask for sample images after the current step."""
        self._commands.put(SAMPLE_NOW)

    def pending_commands(self) -> list[str]:
        """Drain the commands queued since the last call."""
        out: list[str] = []
        while True:
            try:
                out.append(self._commands.get_nowait())
            except queue.Empty:
                return out
