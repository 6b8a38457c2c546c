"""Host -> device copies that do not make the host wait for the GPU.

A plain `.to("cuda")` of a tensor in ordinary (pageable) host memory synchronises: the host
waits until the GPU has finished all the work queued before it, so the next step's kernels
cannot be queued while this one runs. Copied from pinned memory with `non_blocking=True`, the
copy is queued like a kernel instead. `pin_memory()` takes its buffer from torch's caching
host allocator, which keeps it alive until the copy has run, so the small per-step tensors
(batch indices, time ids, loss weights) cost no allocation after the first steps.
"""
from __future__ import annotations

from typing import Any


def to_device(tensor: Any, device: Any) -> Any:
    """`tensor` on `device`; asynchronous when it goes from the host to a CUDA device."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
