"""Text-encoder output caching: (hidden, pooled) per distinct caption, from each image's disk
cache file when its key matches (engine/data/cache_files.py), else encoded, stacked on the device."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from engine.data.cache_files import (
    dtype_name,
    module_fingerprint,
    read_cache_key,
    read_tensors,
    text_cache_path,
    text_key,
    write_cache,
)
from engine.data.progress import Progress
from engine.data.transfer import to_device

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from engine.model.load import SdxlModel


class TextStore:
    """Cached (hidden, pooled) per distinct caption, stacked once on the device."""

    def __init__(self, hidden: "torch.Tensor", pooled: "torch.Tensor", rows: dict[int, int]) -> None:
        self.hidden, self.pooled, self._rows = hidden, pooled, rows

    def __contains__(self, item_index: int) -> bool:
        return item_index in self._rows

    def gather(self, item_indices: Sequence[int]) -> tuple["torch.Tensor", "torch.Tensor"]:
        """(hidden (B, 77, 2048), pooled (B, 1280)) for the batch's items, on the store's device and dtype
        (hidden is (B, 2 + 75 n, 2048) with max_token_length 150 / 225). Raises KeyError for an uncached item.
        """
        import torch

        rows = to_device(torch.tensor([self._rows[i] for i in item_indices]), self.hidden.device)
        return self.hidden.index_select(0, rows), self.pooled.index_select(0, rows)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stacked hidden and pooled outputs."""
        return sum(t.numel() * t.element_size() for t in (self.hidden, self.pooled))


def text_encoders_identity(model: SdxlModel) -> str:
    """A 32-hex-digit fingerprint of what the text outputs depend on: both encoders' configs and weight
    samples, the tokenizers (class, vocabulary size, pad token), max_token_length and weighted_captions.
    """
    parts = [module_fingerprint(model.text_encoder1), module_fingerprint(model.text_encoder2)]
    for tokenizer in (model.tokenizer1, model.tokenizer2):
        parts.append(f"{type(tokenizer).__name__}:{len(tokenizer)}:{tokenizer.pad_token}")
    if getattr(model, "max_token_length", None):  # long captions encode differently (long_prompts.py)
        parts.append(f"max_token_length={model.max_token_length}")
    if getattr(model, "weighted_captions", False):
        parts.append("weighted_captions")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def cache_text_outputs(captions: dict[int, str], images: dict[int, Path], model: SdxlModel, *, to_disk: bool,
                       device: Any, dtype: Any, progress: Progress, batch_size: int = 16
                       ) -> tuple[Optional[TextStore], bool]:
    """Text-encoder outputs for each item's (fixed) caption; items sharing a caption share a row.

    `captions` and `images` map item index -> caption / image path. With `to_disk`, each
    image gets a file keyed by its caption and the encoders' identity.
    """
    import torch

    from engine.model.encode import encode_captions

    encoders_id = text_encoders_identity(model)
    stored_dtype = dtype_name(dtype)
    distinct = list(dict.fromkeys(captions.values()))
    row_of = {caption: n for n, caption in enumerate(distinct)}
    found: dict[str, tuple["torch.Tensor", "torch.Tensor"]] = {}
    up_to_date: set[int] = set()  # items whose file already holds this caption's outputs
    progress.total = len(distinct)
    progress.start()
    if to_disk:
        for index, caption in captions.items():
            key = text_key(caption, encoders_id=encoders_id, dtype=stored_dtype)
            path = text_cache_path(images[index])
            if read_cache_key(path) != key:
                continue
            up_to_date.add(index)
            if caption not in found:
                tensors = read_tensors(path, ["hidden", "pooled"])
                if tensors is not None:
                    found[caption] = (tensors["hidden"], tensors["pooled"])
    missing = [c for c in distinct if c not in found]
    progress.advance(len(distinct) - len(missing))
    for start in range(0, len(missing), batch_size):
        if progress.stop_requested:
            return None, False
        chunk = missing[start:start + batch_size]
        with torch.no_grad():
            hidden, pooled = encode_captions(model, chunk, device, dtype=dtype)
        for n, caption in enumerate(chunk):
            found[caption] = (hidden[n].cpu(), pooled[n].cpu())
        progress.advance(len(chunk))
    if to_disk:
        for index, caption in captions.items():
            if index not in up_to_date:
                hidden, pooled = found[caption]
                key = text_key(caption, encoders_id=encoders_id, dtype=stored_dtype)
                write_cache(text_cache_path(images[index]), {"hidden": hidden, "pooled": pooled}, key)
    if not distinct:
        return None, True
    hidden = torch.stack([found[c][0] for c in distinct]).to(device=device, dtype=dtype)
    pooled = torch.stack([found[c][1] for c in distinct]).to(device=device, dtype=dtype)
    if to_disk:
        progress.log(f"text-encoder outputs: {len(distinct) - len(missing)} of {len(distinct)} captions read "
                     f"from the disk cache, {len(missing)} encoded")
    return TextStore(hidden, pooled, {i: row_of[c] for i, c in captions.items()}), True
