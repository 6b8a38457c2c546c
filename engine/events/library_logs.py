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


@contextlib.contextmanager
def library_chatter_to_log(emit: Callable) -> Iterator[None]:
    """Within the block, library log records and Python warnings become debug Log events via `emit`."""
    handler = _ToEvents(emit)
    saved = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    with warnings.catch_warnings():
        logging.captureWarnings(True)
        try:
            yield
        finally:
            logging.captureWarnings(False)
            for logger, handlers, propagate in saved:
                logger.handlers = handlers
                logger.propagate = propagate
