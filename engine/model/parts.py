"""Loading a model's parts one after another while telling a progress callback which one."""
from __future__ import annotations

from typing import Any, Callable, Optional

# progress(done, total, what): `done` parts are loaded, `what` is the one loading now ("" at the end)
LoadProgress = Callable[[int, int, str], None]


def load_parts(parts: list[tuple[str, str, Callable[[], Any]]], progress: Optional[LoadProgress] = None
               ) -> dict[str, Any]:
    """{key: make()} for each (key, label, make) in order, reporting before each part and at the end."""
    out: dict[str, Any] = {}
    for done, (key, label, make) in enumerate(parts):
        if progress is not None:
            progress(done, len(parts), label)
        out[key] = make()
    if progress is not None:
        progress(len(parts), len(parts), "")
    return out


def loading_progress(emit: Callable[[Any], None], before: Optional[Callable[[], None]] = None) -> LoadProgress:
    """A progress callback that emits PhaseProgress(loading_model, done/total parts, "loading VAE");
    `before()` runs first each time (the run re-takes library loggers the imports just set up)."""
    import time

    from engine.events.types import LOADING_MODEL, PhaseProgress

    def progress(done: int, total: int, part: str) -> None:
        if before is not None:
            before()
        emit(PhaseProgress(time=time.time(), name=LOADING_MODEL, done=done, total=total, unit="parts",
                           detail=f"loading {part}" if part else "loaded"))

    return progress
