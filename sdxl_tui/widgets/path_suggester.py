"""Filesystem completion for path inputs (accept the suggestion with → or End)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from textual.suggester import Suggester


class PathSuggester(Suggester):
    """Completes the last path component from the filesystem (accept with → or End)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> Optional[str]:
        """Textual's suggester hook: complete_path(value)."""
        return complete_path(value)


def complete_path(value: str) -> Optional[str]:
    """`value` completed to the first matching file or folder name (a folder gets a trailing separator); None when
    nothing matches or it is already complete. Hidden names are not offered."""
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, _, prefix = expanded.rpartition(os.sep)
    folder_path = Path(folder or ("/" if expanded.startswith(os.sep) else "."))
    try:
        names = sorted(entry.name for entry in os.scandir(folder_path)
                       if entry.name.startswith(prefix) and not entry.name.startswith("."))
    except OSError:
        return None
    if not names or (names == [prefix] and not (folder_path / prefix).is_dir()):
        return None
    name = names[0]
    tail = name[len(prefix):] + (os.sep if (folder_path / name).is_dir() else "")
    return value + tail if tail else None
