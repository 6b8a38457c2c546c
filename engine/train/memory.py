"""Memory snapshots for Step events: CUDA figures where CUDA runs, process RSS always."""
from __future__ import annotations

import os

from engine.events.types import Memory


def process_rss() -> int | None:
    """This process's resident set size in bytes (psutil), or None when psutil is missing or refused."""
    try:
        import psutil

        return int(psutil.Process(os.getpid()).memory_info().rss)
    except Exception:  # psutil missing or a sandbox refusing /proc: memory is informational
        return None


def snapshot(device=None) -> Memory:
    """Current memory use; `device` is a torch device (CUDA figures only when it is CUDA)."""
    import torch

    rss = process_rss()
    if device is None or getattr(device, "type", str(device)) != "cuda" or not torch.cuda.is_available():
        return Memory(device="cpu", rss=rss)
    index = device.index if getattr(device, "index", None) is not None else torch.cuda.current_device()
    return Memory(
        device=f"cuda:{index}",
        allocated=int(torch.cuda.memory_allocated(index)),
        reserved=int(torch.cuda.memory_reserved(index)),
        peak=int(torch.cuda.max_memory_allocated(index)),
        total=int(torch.cuda.get_device_properties(index).total_memory),
        rss=rss,
    )
