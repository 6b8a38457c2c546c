"""Write files so that a crash at any moment leaves either the old file or the new one.

The temporary file `mkstemp` makes is private (0600); before the rename it gets the mode a plain
`open()` would have given, 0666 minus the umask (0644 under umask 022), so LoRA files, samples,
configs and caches are readable as users expect. Pass `mode` for a file that must stay private.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename into it survives a power cut; errors are ignored (some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where /proc tells it (os.umask can only be
    read by setting it, which races with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically; the file's permissions are `mode`, or by default what
    `open()` would give (0666 & ~umask). Raises OSError (ENOSPC and the like) leaving `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode if mode is not None else 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str, mode: int | None = None) -> Path:
    """Write `text` as UTF-8 to `path` atomically (see atomic_write_bytes). Raises OSError, leaving `path` as it was."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_save_safetensors(path: Path, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    """safetensors' serialiser into memory, then the atomic write."""
    from safetensors.torch import save

    return atomic_write_bytes(path, save(tensors, metadata=metadata))
