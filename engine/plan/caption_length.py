"""How many captions are longer than the text encoders' window (for `sdxl-tui plan`).

SDXL's text encoders see 77 tokens: a begin token, 75 caption tokens and an end token; with
`max_token_length` 150 or 225, two or three such windows. sd-scripts and sdxl-tui cut a longer
caption at that limit, so its later tags never reach the model. The count uses the model's own CLIP tokenizer (text
encoder 1's: both SDXL tokenizers split text the same way) from local files only: the model's
diffusers folder, `tokenizer_cache_dir`, or the Hugging Face cache; without one, no count.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

CAPTION_TOKENS = 75  # 77 minus the begin and end tokens


@dataclass(frozen=True)
class CaptionLengths:
    """How many captions are longer than the text encoders read (`limit` tokens, begin and end tokens not counted)."""
    captions: int
    too_long: int
    longest: int  # tokens, begin / end tokens not counted
    limit: int = CAPTION_TOKENS

    def line(self) -> str:
        """One plan line: all captions fit, or how many are cut at `limit` tokens."""
        if not self.too_long:
            return f"Captions: all {self.captions} fit in {self.limit} tokens (longest {self.longest})"
        return (f"Captions: {self.too_long} of {self.captions} are longer than {self.limit} tokens (longest "
                f"{self.longest}); the text encoders see only their first {self.limit} tokens "
                f"(max_token_length)")


def count_long_captions(tokenizer: Any, captions: Iterable[str], limit: int = CAPTION_TOKENS) -> CaptionLengths:
    """Token counts of `captions` (each line of a multi-line wildcard caption counted on its own)."""
    lengths = []
    for caption in captions:
        for line in caption.split("\n") or [""]:
            lengths.append(len(tokenizer(line, truncation=False, add_special_tokens=False).input_ids))
    too_long = sum(1 for n in lengths if n > limit)
    return CaptionLengths(len(lengths), too_long, max(lengths, default=0), limit)


def _local_tokenizer(model) -> Optional[Any]:
    """Text encoder 1's CLIPTokenizer from local files only, or None."""
    from engine.model.source import detect_model_source

    try:
        from transformers import CLIPTokenizer
    except ImportError:  # pragma: no cover
        return None
    places = []
    if model.tokenizer_cache_dir:
        places.append(Path(model.tokenizer_cache_dir).expanduser())
    source = detect_model_source(model.pretrained_model_name_or_path)
    if source.kind == "diffusers":
        places.append(Path(source.path))
    for place in places:
        if (place / "tokenizer").is_dir():
            return CLIPTokenizer.from_pretrained(str(place), subfolder="tokenizer")
    repo = source.path if source.kind == "hub" else "stabilityai/stable-diffusion-xl-base-1.0"
    try:
        return CLIPTokenizer.from_pretrained(repo, subfolder="tokenizer", local_files_only=True)
    except (OSError, ValueError):
        return None


def caption_lengths(cfg, scanned) -> Optional[CaptionLengths]:
    """Counts for every image's caption (subset prefix / suffix added), or None without a tokenizer."""
    try:
        tokenizer = _local_tokenizer(cfg.model)
    except Exception:  # an unreadable model path is the rules' and the model check's to report
        return None
    if tokenizer is None:
        return None
    subsets = {s.index: s for s in scanned.config.all_subsets()}
    captions = []
    for item in scanned.items:
        subset = subsets[item.subset_index]
        text = item.caption
        if subset.caption_prefix:
            text = f"{subset.caption_prefix} {text}"
        if subset.caption_suffix:
            text = f"{text} {subset.caption_suffix}"
        captions.append(text)
    limit = cfg.training.max_token_length or CAPTION_TOKENS
    return count_long_captions(tokenizer, captions, limit)
