"""Recent runs: output folders the wizard started, remembered across sessions.

Stored as a small JSON list in `$XDG_STATE_HOME/sdxl-tui/recent-runs.json` (default
`~/.local/state/sdxl-tui/`). Only folders that still hold a `config.toml` or `events.jsonl`
are listed, so deleted runs drop out on their own.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

LIMIT = 10


@dataclass(frozen=True)
class RecentRun:
    """A run the wizard or `sdxl-tui train` started, known by its output folder."""
    output_dir: Path

    @property
    def config_path(self) -> Path:
        """The config copy the run keeps in its output folder."""
        return self.output_dir / "config.toml"

    @property
    def events_path(self) -> Path:
        """The run's event log."""
        return self.output_dir / "events.jsonl"

    @property
    def exists(self) -> bool:
        """True while its output folder still holds its config or its events."""
        return self.config_path.exists() or self.events_path.exists()


def state_dir(environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where sdxl-tui keeps its state: $XDG_STATE_HOME/sdxl-tui, by default ~/.local/state/sdxl-tui."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local" / "state")
    return Path(base) / "sdxl-tui"


def recent_file(environ: Optional[Mapping[str, str]] = None) -> Path:
    """The JSON list of recent output folders."""
    return state_dir(environ) / "recent-runs.json"


def load_recent(environ: Optional[Mapping[str, str]] = None) -> list[RecentRun]:
    """The recent runs, newest first, leaving out those whose folders are gone; [] when the list is missing or
    unreadable."""
    try:
        raw = json.loads(recent_file(environ).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    runs = [RecentRun(Path(item)) for item in raw if isinstance(item, str)]
    return [run for run in runs if run.exists]


def remember(output_dir: Path, environ: Optional[Mapping[str, str]] = None) -> None:
    """Put `output_dir` first in the recent-runs list (at most LIMIT kept); a list that cannot be written is skipped
    silently."""
    from engine.storage.atomic import atomic_write_text

    output_dir = output_dir.expanduser().resolve()
    kept = [str(output_dir)] + [str(r.output_dir) for r in load_recent(environ) if r.output_dir != output_dir]
    path = recent_file(environ)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(kept[:LIMIT], indent=1))
    except OSError:
        pass  # remembering is a convenience; a read-only home must not stop a run
