"""Reading tensors out of a `.safetensors` file one at a time, without a memory map.

`safetensors.safe_open` maps the whole file; every tensor it hands out is a view into that
map, and each page read stays in this process's resident memory until the last view and the
handle are gone. Converting a part (fp16 in the file, fp32 in training) through it therefore
holds the file's pages and the converted copy at once: for SDXL's text encoder 2 that was
~1.3 GiB of fp16 pages + the 2.6 GiB fp32 copy. Here each tensor is read with a plain file
read into its own buffer and cast at once, so only one source tensor exists at a time
(file layout: https://github.com/huggingface/safetensors#format).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

# safetensors dtype names -> torch dtype attribute names
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
           "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
           "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """({key: {"dtype", "shape", "data_offsets"}}, byte offset where the data starts); the
    `__metadata__` entry is left out. Raises ValueError for a file too short or malformed."""
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short for a safetensors header")
        (size,) = struct.unpack("<Q", raw)
        header = json.loads(handle.read(size))
    header.pop("__metadata__", None)
    return header, 8 + size


def read_prefixed(path: Path, prefix: str, float_dtype: Any | None = None) -> dict:
    """{key without `prefix`: tensor} for every key starting with `prefix`, floating tensors cast
    to `float_dtype` (kept as stored when None), each read into fresh memory (no memory map).

    A tensor that is cast is read into one staging buffer, reused for every tensor, and its cast
    copy is the only new allocation: reading each into a buffer of its own and freeing it after
    the cast left ~1 GiB of freed fp16 buffers resident in the allocator's heap for the full UNet
    (glibc serves blocks under its dynamic mmap threshold, up to 32 MiB, from the heap, which it
    rarely returns). Raises ValueError for a file cut short."""
    import torch

    header, start = read_header(path)
    out = {}
    staging = torch.empty(0, dtype=torch.uint8)
    with open(path, "rb") as handle:
        for key, info in header.items():
            if not key.startswith(prefix):
                continue
            begin, end = info["data_offsets"]
            stored = getattr(torch, _DTYPES[info["dtype"]])
            cast = float_dtype is not None and stored.is_floating_point and stored != float_dtype
            if cast:
                if staging.numel() < end - begin:
                    staging = torch.empty(end - begin, dtype=torch.uint8)
                raw = staging[:end - begin]
            else:
                tensor = torch.empty(info["shape"], dtype=stored)
                raw = tensor.view(-1).view(torch.uint8)
            handle.seek(start + begin)
            if end > begin and handle.readinto(raw.numpy()) != end - begin:
                raise ValueError(f"{path}: {key} is cut short")
            if cast:
                tensor = raw.view(stored).view(info["shape"]).to(float_dtype)
            out[key[len(prefix):]] = tensor
    return out
