"""SDXL's two tokenizers built from CLIP's BPE vocabulary shipped with this package: no network,
no tokenizer folder.

Both SDXL text encoders (CLIP ViT-L/14 and OpenCLIP ViT-bigG/14) use the same 49408-token BPE
vocabulary (`clip_vocab/bpe_simple_vocab_16e6.txt.gz`, MIT, see clip_vocab/NOTICE). The vocab
order is OpenAI CLIP's `SimpleTokenizer` (open_clip/tokenizer.py): the 256 byte characters, the
same with `</w>`, the first 48894 merges joined, then `<|startoftext|>` (49406) and
`<|endoftext|>` (49407). The tokenizers differ only in padding, as in the Hub's SDXL folders
and sd-scripts (library/strategy_sdxl.py sets `tokenizer2.pad_token_id = 0`): encoder 1 pads
with its end token, encoder 2 with `!` (id 0).
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

VOCAB_FILE = Path(__file__).resolve().parent / "clip_vocab" / "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
MAX_LENGTH = 77
START, END = "<|startoftext|>", "<|endoftext|>"
# The merges CLIP keeps: vocab size - 256 byte chars * 2 - 2 specials.
_NUM_MERGES = CLIP_VOCAB_SIZE - 256 * 2 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (open_clip/tokenizer.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


@lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(token -> id, merges in priority order) of CLIP's BPE; raises ModelError when the
    packaged vocabulary file is missing (a broken install)."""
    from engine.errors import ModelError

    try:
        lines = gzip.decompress(VOCAB_FILE.read_bytes()).decode("utf-8").split("\n")
    except OSError as exc:
        raise ModelError(f"CLIP's BPE vocabulary {VOCAB_FILE} cannot be read ({exc})",
                         hint="reinstall sdxl-tui, or set tokenizer_cache_dir to a folder with SDXL's "
                              "tokenizer/ and tokenizer_2/") from exc
    merges = tuple(tuple(line.split()) for line in lines[1:_NUM_MERGES + 1])
    byte_chars = list(_bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [START, END]
    return {token: index for index, token in enumerate(tokens)}, merges


@lru_cache(maxsize=1)
def _tokenizer_class() -> type:
    from transformers import CLIPTokenizer

    class FixedTextCLIPTokenizer(CLIPTokenizer):
        """CLIPTokenizer that first repairs text with ftfy, as OpenAI CLIP, open_clip and
        transformers' original (slow) CLIPTokenizer that sd-scripts used all do: full-width
        letters, ligatures and mojibake then get the ids the encoders were trained with."""

        def __call__(self, text=None, *args, **kwargs):
            return super().__call__(_fix(text), *args, **kwargs)

    return FixedTextCLIPTokenizer


def _fix(text):
    import ftfy

    if isinstance(text, str):
        return ftfy.fix_text(text)
    if isinstance(text, (list, tuple)):
        return [ftfy.fix_text(t) if isinstance(t, str) else t for t in text]
    return text


def clip_tokenizer(pad_token: str) -> Any:
    """One CLIP tokenizer (a transformers CLIPTokenizer, 77 tokens) padding with `pad_token`."""
    vocab, merges = clip_vocab_and_merges()
    return _tokenizer_class()(vocab=dict(vocab), merges=list(merges), pad_token=pad_token,
                              model_max_length=MAX_LENGTH)


def sdxl_tokenizers() -> tuple[Any, Any]:
    """(tokenizer 1, tokenizer 2) of SDXL: ids `[B, 77]` from `tok(captions, padding="max_length",
    max_length=77, truncation=True)`; 1 pads with `<|endoftext|>` (49407), 2 with `!` (0)."""
    return clip_tokenizer(END), clip_tokenizer("!")
