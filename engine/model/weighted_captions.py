"""sd-scripts' `weighted_captions`: `(word:1.2)`, `(word)` (x1.1) and `[word]` (/1.1) in captions.

The grammar is A1111's prompt attention, as sd-scripts parses it (`library/strategy_base.py:
_get_weighted_input_ids`): `\\(` `\\)` `\\[` `\\]` `\\\\` are literal characters, unbalanced
brackets close at the end. Each text piece is tokenized on its own (without begin / end tokens),
its tokens take its weight, the ids are cut at 75 and padded to 77 (`<BOS> ... <EOS> <PAD>...`,
weights 1.0 outside the caption). sd-scripts then multiplies both encoders' hidden states
`[B, 77, w]` by the weights per token; the pooled embedding stays unweighted
(`library/strategy_sdxl.py: encode_tokens_with_weights`).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

ROUND = 1.1
SQUARE = 1 / 1.1
_ATTENTION = re.compile(r"""\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:([+-]?[.\d]+)\)|\)|]|[^\\()\[\]:]+|:""", re.X)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Pieces of `text` with their weights, neighbours of equal weight merged."""
    pieces: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])
        elif token == "(":
            rounds.append(len(pieces))
        elif token == "[":
            squares.append(len(pieces))
        elif weight is not None and rounds:
            scale(rounds.pop(), float(weight))
        elif token == ")" and rounds:
            scale(rounds.pop(), ROUND)
        elif token == "]" and squares:
            scale(squares.pop(), SQUARE)
        else:
            pieces.append([token, 1.0])
    for start in rounds:
        scale(start, ROUND)
    for start in squares:
        scale(start, SQUARE)
    if not pieces:
        pieces = [["", 1.0]]
    merged = [pieces[0]]
    for piece in pieces[1:]:
        if piece[1] == merged[-1][1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(piece)
    return [(text_piece, weight) for text_piece, weight in merged]


def weighted_ids(tokenizer: Any, captions: list[str], length: int = 77) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(ids `[B, length]`, weights `[B, length]` float32) for `captions`."""
    import torch

    inner = length - 2
    all_ids, all_weights = [], []
    for caption in captions:
        ids: list[int] = []
        weights: list[float] = []
        for piece, weight in parse_attention(caption):
            piece_ids = tokenizer(piece).input_ids[1:-1]
            ids += piece_ids
            weights += [weight] * len(piece_ids)
            if len(ids) > inner:
                break
        ids, weights = ids[:inner], weights[:inner]
        pad = length - 2 - len(ids)
        all_ids.append([tokenizer.bos_token_id] + ids + [tokenizer.eos_token_id] + [tokenizer.pad_token_id] * pad)
        all_weights.append([1.0] + weights + [1.0] * (pad + 1))
    return torch.tensor(all_ids), torch.tensor(all_weights, dtype=torch.float32)
