"""Library chatter (transformers, diffusers, accelerate, bitsandbytes, huggingface_hub warnings
and Python `warnings`) goes to the run's log as debug `Log` events, not over a live panel.

While a run is active, those loggers lose their own stderr handlers and stop propagating; one
handler turns each record into `Log(level="debug", message="transformers: ...")` through the
run's emit, so events.jsonl keeps them and the live views (which skip debug lines) stay clean.
Everything is restored when the run ends.
"""
from __future__ import annotations

import contextlib
import logging
import time
import warnings
from typing import Callable, Iterator

LIBRARY_LOGGERS = ("transformers", "diffusers", "accelerate", "bitsandbytes", "huggingface_hub", "peft",
                   "torch", "py.warnings")


class _ToEvents(logging.Handler):
    def __init__(self, emit: Callable) -> None:
        super().__init__(logging.INFO)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        from engine.events.types import Log

        try:
            message = record.getMessage().strip()
            self._emit(Log(time=time.time(), level="debug", message=f"{record.name}: {message}"[:2000]))
        except Exception:  # a log record must never break a run
            self.handleError(record)


class ChatterRedirect:
    """The loggers' saved state while a run holds them; `reroute()` takes back a library logger
    that configured its own stderr handler after the run began (transformers and diffusers add
    one when they are first imported, which happens while the model loads)."""

    def __init__(self, emit: Callable) -> None:
        self.handler = _ToEvents(emit)
        self.saved: dict[str, tuple[list, bool]] = {}

    def reroute(self) -> None:
        """Send the libraries' loggers to our handler only (no propagation), remembering their setup once."""
        for name in LIBRARY_LOGGERS:
            logger = logging.getLogger(name)
            if logger.handlers == [self.handler] and not logger.propagate:
                continue
            self.saved.setdefault(name, (logger.handlers[:], logger.propagate))
            logger.handlers = [self.handler]
            logger.propagate = False

    def restore(self) -> None:
        """Give the libraries' loggers back the handlers they had before `reroute`."""
        for name, (handlers, propagate) in self.saved.items():
            logger = logging.getLogger(name)
            logger.handlers = handlers
            logger.propagate = propagate


@contextlib.contextmanager
def library_chatter_to_log(emit: Callable) -> Iterator[ChatterRedirect]:
    """Within the block, library log records and Python warnings become debug Log events via
    `emit`; call `.reroute()` on what it yields after importing a library that sets up logging."""
    redirect = ChatterRedirect(emit)
    redirect.reroute()
    with warnings.catch_warnings():
        logging.captureWarnings(True)
        try:
            yield redirect
        finally:
            logging.captureWarnings(False)
            redirect.restore()
