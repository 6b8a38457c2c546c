"""Captions longer than one 77-token window: sd-scripts' `max_token_length` 150 / 225 for SDXL.

As sd-scripts does (`library/strategy_base.py: _get_input_ids`, `library/strategy_sdxl.py:
_get_hidden_states_sdxl`): the caption is tokenized to `max_token_length + 2` tokens, cut into
n = max_token_length / 75 windows of `<BOS> 75 tokens <EOS/PAD>`, each window goes through both
encoders on its own, and the hidden states are joined back as `<BOS>`, each window's 75 inner
states, and the last window's final state: `[B, 2 + 75 n, 768 + 1280]`. The pooled embedding is
the first window's. For tokenizer 2 (padding `!`, not `<EOS>`) a window whose last real token
runs into the cut gets `<EOS>` as its last token, and an empty window starts `<BOS> <EOS>`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

WINDOW = 77
INNER = WINDOW - 2  # caption tokens per window
LONG_TOKEN_LENGTHS = (150, 225)


def window_ids(tokenizer: Any, captions: list[str], max_token_length: int) -> "torch.Tensor":
    """Token ids `[B * n, 77]`, n = max_token_length / 75 windows per caption (caption-major)."""
    import torch

    full = tokenizer(captions, padding="max_length", truncation=True, max_length=max_token_length + 2,
                     return_tensors="pt").input_ids
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    rows = []
    for ids in full:
        for start in range(1, max_token_length + 2 - WINDOW + 2, INNER):
            chunk = torch.cat([ids[:1], ids[start:start + INNER], ids[-1:]])
            if pad != eos:
                if chunk[-2] != eos and chunk[-2] != pad:
                    chunk[-1] = eos
                if chunk[1] == pad:
                    chunk[1] = eos
            rows.append(chunk)
    return torch.stack(rows)


def join_windows(hidden: "torch.Tensor", batch_size: int) -> "torch.Tensor":
    """`[B * n, 77, w]` -> `[B, 2 + 75 n, w]`: first `<BOS>`, each window's 75 inner states, last state."""
    import torch

    per_caption = hidden.reshape(batch_size, -1, hidden.shape[-1])  # [B, n * 77, w]
    parts = [per_caption[:, :1]]
    for start in range(1, per_caption.shape[1], WINDOW):
        parts.append(per_caption[:, start:start + INNER])
    parts.append(per_caption[:, -1:])
    return torch.cat(parts, dim=1)


def windows_per_caption(max_token_length: int) -> int:
    """How many 75-token windows a caption gets for `max_token_length` (75, 150 or 225 gives 1, 2 or 3), as sd-
    scripts."""
    return max_token_length // INNER
