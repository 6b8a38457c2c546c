"""Free space before a save, and a full disk during one, both as `DiskFullError`.

A save needs room for the whole new file next to the old one (files are written under a temp
name and renamed; state folders are pruned only after the new one is complete), so the check
asks for the full size of what is about to be written plus a margin for headers and
metadata. Nothing is deleted to make room: the user's earlier files are theirs.
"""
from __future__ import annotations

import errno
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from engine.errors import DiskFullError, OutputError
from engine.units import human_bytes

SAVE_MARGIN_BYTES = 4 * 1024 * 1024  # safetensors header + metadata + small state files
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


@dataclass(frozen=True)
class SpaceCheck:
    """Free bytes at a folder against the bytes a save needs (margin included)."""
    folder: Path
    needed: int
    free: int

    @property
    def enough(self) -> bool:
        """Whether the save fits."""
        return self.free >= self.needed


def tensor_bytes(tensors: Iterable) -> int:
    """Bytes the tensors hold (numel × element size)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def lora_file_bytes(network, save_precision: str) -> int:
    """Bytes a LoRA file of `network` takes in `save_precision` (tensors only)."""
    per = DTYPE_BYTES.get(save_precision, 4)
    return sum(t.numel() * per for t in network.kohya_state_dict().values())


def optimizer_state_bytes(optimizer) -> int:
    """Bytes of the tensors in an optimizer's state dict (moments, 8-bit quantiles, step
    counts), however nested (a fused backward's per-parameter optimizers included)."""
    return _nested_tensor_bytes(optimizer.state_dict())


def _nested_tensor_bytes(value) -> int:
    if hasattr(value, "element_size"):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nested_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nested_tensor_bytes(v) for v in value)
    return 0


def state_folder_bytes(network, optimizer) -> int:
    """Bytes a state folder takes: the LoRA in fp32 plus the optimizer state (the rest is small)."""
    return lora_file_bytes(network, "fp32") + optimizer_state_bytes(optimizer)


def _existing_ancestor(folder: Path) -> Path:
    folder = Path(folder).expanduser().absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def free_bytes(folder: Path) -> int:
    """Bytes free to this user on the filesystem holding `folder` (its nearest existing parent)."""
    return shutil.disk_usage(_existing_ancestor(folder)).free


def check_space(folder: Path, needed: int) -> SpaceCheck:
    """A SpaceCheck for writing `needed` bytes under `folder`."""
    return SpaceCheck(Path(folder), int(needed) + SAVE_MARGIN_BYTES, free_bytes(folder))


def disk_full_error(folder: Path, what: str, needed: int | None = None, free: int | None = None) -> DiskFullError:
    """The DiskFullError (exit 74) naming what could not be saved, where, and how much is missing."""
    if needed is not None and free is not None:
        amounts = f": it needs {human_bytes(needed)}, {human_bytes(free)} is free"
    else:
        amounts = ""
    return DiskFullError(
        f"not enough disk space in {folder} to save {what}{amounts}; training stopped, earlier files are intact",
        hint=f"free at least {human_bytes(needed or 0)} there (or point output_dir at a larger disk), "
             f"then continue with `sdxl-tui resume {_run_dir(folder)}`" if needed
        else f"free space there (or point output_dir at a larger disk), then `sdxl-tui resume {_run_dir(folder)}`")


def _run_dir(folder: Path) -> Path:
    folder = Path(folder)
    return folder.parent if folder.name == "state" else folder


def ensure_space(folder: Path, needed: int, what: str) -> None:
    """Raise DiskFullError when `folder`'s file system has less than `needed` (+ margin) free."""
    check = check_space(folder, needed)
    if not check.enough:
        raise disk_full_error(check.folder, what, check.needed, check.free)


class write_errors:
    """Context manager: OSError while saving `what` into `folder` -> DiskFullError (ENOSPC,
    EDQUOT) or OutputError, both naming the folder."""

    def __init__(self, folder: Path, what: str, needed: int | None = None) -> None:
        self.folder, self.what, self.needed = Path(folder), what, needed

    def __enter__(self) -> "write_errors":
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, OSError):
            return False
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            free = None
            try:
                free = free_bytes(self.folder)
            except OSError:
                pass
            needed = self.needed + SAVE_MARGIN_BYTES if self.needed is not None else None
            raise disk_full_error(self.folder, self.what, needed, free) from None
        raise OutputError(f"cannot write {self.what} in {self.folder}: {exc.strerror or exc}",
                          hint="check the folder's permissions and free space") from None
