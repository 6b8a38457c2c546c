"""Which GPU is here and how much memory it has, without importing torch.

NVML (nvidia-ml-py) when importable, else one short `nvidia-smi` query, else "CPU".
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Optional

from engine.units import human_bytes


@dataclass(frozen=True)
class GpuInfo:
    """The GPU the wizard plans for: its name and memory in bytes (None for the CPU)."""
    name: str
    total_bytes: Optional[int]  # None for the CPU

    @property
    def is_cpu(self) -> bool:
        """True when no NVIDIA GPU was found."""
        return self.total_bytes is None

    def __str__(self) -> str:
        return "CPU (no NVIDIA GPU found)" if self.is_cpu else f"{self.name}, {human_bytes(self.total_bytes)}"


CPU = GpuInfo("CPU", None)


def _from_nvml() -> Optional[GpuInfo]:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVMLError subclasses vary by version
        return None
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        return GpuInfo(name, int(pynvml.nvmlDeviceGetMemoryInfo(handle).total))
    except Exception:
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def parse_nvidia_smi(text: str) -> Optional[GpuInfo]:
    """First GPU from `--query-gpu=name,memory.total --format=csv` output (MiB)."""
    for line in text.splitlines()[1:]:
        name, _, memory = line.rpartition(",")
        digits = "".join(ch for ch in memory if ch.isdigit())
        if name.strip() and digits:
            return GpuInfo(name.strip(), int(digits) * 1024 * 1024)
    return None


def _from_nvidia_smi() -> Optional[GpuInfo]:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv"],
                              capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_nvidia_smi(done.stdout) if done.returncode == 0 else None


def detect_gpu() -> GpuInfo:
    """The first NVIDIA GPU, through NVML or else nvidia-smi; the CPU when neither finds one. Never raises."""
    return _from_nvml() or _from_nvidia_smi() or CPU
