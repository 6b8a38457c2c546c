"""Units shown to people. Sizes are decimal gigabytes (GB = 10**9 bytes) everywhere: the
VRAM estimate, disk space, model sizes, the dashboard's memory figures."""
from __future__ import annotations

GB = 1e9  # bytes


def human_bytes(n: float) -> str:
    """`n` bytes in the largest decimal unit below 1000 of it: "512 B", "1.5 MB", "12.9 GB"."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
