"""Process signals -> a graceful stop, for the headless CLI (the TUI's stop key calls
`RunControl.request_stop` itself).

SIGINT (Ctrl-C), SIGTERM and SIGHUP (the SSH connection dropped) ask the run to finish the
current step, save the LoRA and the state, and end; the command then exits 130 / 143 / 129.
A second signal while nothing is being saved exits at once (nothing to lose). A second one
during a save waits for it only when it is nearly done (`SaveProgress.nearly_done`);
otherwise the save is abandoned: its temporary files are removed and the process exits at
once, leaving the previous LoRA and state exactly as they were (every save is written under a
temporary name and renamed). A third signal always exits at once.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

EXIT_CODES = {"SIGHUP": 129, "SIGINT": 130, "SIGTERM": 143}
REASONS = {"SIGHUP": "the terminal hung up (SIGHUP)", "SIGINT": "Ctrl-C (SIGINT)",
           "SIGTERM": "terminated (SIGTERM)"}


class StoppedBeforeTraining(KeyboardInterrupt):
    """Raised in the main thread by a stop signal that arrives before the first step (while the
    model loads, for example): nothing is trained, so nothing waits to be saved. A
    KeyboardInterrupt so that library code catching Exception (network retries) lets it pass."""

    def __init__(self, exit_code: int, reason: str) -> None:
        super().__init__(reason)
        self.exit_code = exit_code
        self.reason = reason


def exit_code_for(signum: int) -> int:
    """The shell's exit code for a process ended by signal `signum` (128 + the number: 130 for SIGINT)."""
    return 128 + int(signum)


@dataclass
class StopSignals:
    """Installed handlers; `exit_code` is set by the first signal received (None: none came)."""

    control: object  # engine.control.run_control.RunControl
    saving: object  # engine.control.save_progress.SaveProgress
    say: Callable[[str], None] = lambda text: None
    exit_now: Callable[[int], None] = os._exit
    exit_code: Optional[int] = None
    received: list = field(default_factory=list)
    _previous: dict = field(default_factory=dict)

    def handle(self, signum: int, frame=None) -> None:
        """The signal handler. Before training begins: stop at once (raises StoppedBeforeTraining). First signal in
        training: stop after this step and save. Second: wait only for a save that is nearly done. Otherwise:
        remove a save's temp files and call `exit_now`."""
        name = signal.Signals(signum).name
        self.received.append(name)
        code = EXIT_CODES.get(name, exit_code_for(signum))
        if self.exit_code is None and getattr(self.control, "interruptible", False):
            self.exit_code = code
            self.control.request_stop(REASONS.get(name, name))
            self.say(f"{REASONS.get(name, name)}: nothing is trained yet, stopping now")
            raise StoppedBeforeTraining(code, REASONS.get(name, name))
        if self.exit_code is None:
            self.exit_code = code
            self.say(f"{REASONS.get(name, name)}: finishing this step, then saving the LoRA and state "
                     f"(press Ctrl-C again to quit without saving)")
            self.control.request_stop(REASONS.get(name, name))
            return
        if len(self.received) == 2 and self.saving.active and self.saving.nearly_done():
            self.say(f"saving {self.saving.what}: {self.saving.fraction:.0%} done, waiting for it to finish "
                     f"(again to quit at once)")
            return
        if self.saving.active:
            self.saving.remove_temp_files()
            self.say(f"quitting without finishing the save of {self.saving.what}; the previous files are intact")
        else:
            self.say("quitting at once")
        self.exit_now(self.exit_code)

    def install(self) -> "StopSignals":
        """Install `handle` for SIGINT, SIGTERM and SIGHUP (where the platform has them), keeping the previous
        handlers. Raises RuntimeError off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("signal handlers can only be installed from the main thread")
        for sig in _stop_signals():
            self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def restore(self) -> None:
        """Put back the handlers that `install` replaced."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


def _stop_signals() -> list[int]:
    found = [signal.SIGINT, signal.SIGTERM]
    if hasattr(signal, "SIGHUP"):
        found.append(signal.SIGHUP)
    return found


def handle_stop_signals(control, *, say: Optional[Callable[[str], None]] = None) -> StopSignals:
    """Handlers for `control` (its `saving` progress decides about a second signal); use as a
    context manager around the run, then exit with `.exit_code` when it is set. `say` shows a
    line to the person (the CLI passes a stderr printer that survives a closed terminal)."""
    return StopSignals(control=control, saving=control.saving, say=say or (lambda text: None))
