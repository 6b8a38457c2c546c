"""sd-scripts' per-sample caption processing, as a pure function of its inputs and an rng.

Order (as sd-scripts): prefix/suffix are added, then whole-caption dropout is decided
(`caption_dropout_rate`, or every n-th epoch), then the tags are split into kept and free
ones (`keep_tokens` or `keep_tokens_separator`), token warm-up trims the free tags, the free
tags are shuffled and tag dropout removes some, and the parts are joined with ", ".
Random draws come only from the `rng` passed in, in that order, so a seeded run repeats.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CaptionOptions:
    shuffle_caption: bool = False
    caption_separator: str = ","
    secondary_separator: Optional[str] = None
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    caption_prefix: Optional[str] = None
    caption_suffix: Optional[str] = None
    caption_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    caption_tag_dropout_rate: float = 0.0
    token_warmup_min: int = 1
    token_warmup_step: float = 0.0

    @classmethod
    def from_subset(cls, subset) -> "CaptionOptions":
        """From a `SubsetSpec` (or anything with the same attribute names)."""
        return cls(**{name: getattr(subset, name) for name in cls.__dataclass_fields__})

    @property
    def is_static(self) -> bool:
        """True when the caption never changes between epochs (so text outputs can be cached)."""
        return not (self.shuffle_caption or self.caption_dropout_rate > 0 or self.caption_tag_dropout_rate > 0
                    or self.caption_dropout_every_n_epochs > 0 or self.token_warmup_step > 0)


def _split(text: str, separator: str) -> list[str]:
    return [t.strip() for t in text.split(separator) if t.strip()]


def _warmup_steps(options: CaptionOptions, max_train_steps: int) -> int:
    """token_warmup_step below 1 is a fraction of the run's steps."""
    if options.token_warmup_step < 1:
        return math.floor(options.token_warmup_step * max_train_steps)
    return int(options.token_warmup_step)


def process_caption(caption: str, options: CaptionOptions, rng: random.Random, *, epoch: int = 1,
                    step: int = 0, max_train_steps: int = 0) -> str:
    """The caption the model sees for one sample. `epoch` is 1-based (as sd-scripts counts)."""
    if options.caption_prefix:
        caption = f"{options.caption_prefix} {caption}"
    if options.caption_suffix:
        caption = f"{caption} {options.caption_suffix}"

    dropped = options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate
    every = options.caption_dropout_every_n_epochs
    if dropped or (every > 0 and epoch % every == 0):
        return ""

    warmup = _warmup_steps(options, max_train_steps)
    if options.shuffle_caption or warmup > 0 or options.caption_tag_dropout_rate > 0:
        caption = _rearrange_tags(caption, options, rng, warmup, step)

    if options.secondary_separator:
        caption = caption.replace(options.secondary_separator, options.caption_separator)
    return caption


def _rearrange_tags(caption: str, options: CaptionOptions, rng: random.Random, warmup: int, step: int) -> str:
    sep = options.caption_separator
    kept: list[str] = []
    kept_suffix: list[str] = []
    marker = options.keep_tokens_separator
    if marker and marker in caption:
        kept_part, free_part = caption.split(marker, 1)
        if marker in free_part:
            free_part, suffix_part = free_part.split(marker, 1)
            kept_suffix = _split(suffix_part, sep)
        kept = _split(kept_part, sep)
        free = _split(free_part, sep)
    else:
        tags = [t.strip() for t in caption.strip().split(sep)]
        kept, free = tags[:options.keep_tokens], tags[options.keep_tokens:]

    if warmup and step < warmup:
        count = math.floor(step * (len(free) - options.token_warmup_min) / warmup) + options.token_warmup_min
        free = free[:count]

    if options.shuffle_caption:
        rng.shuffle(free)
    if options.caption_tag_dropout_rate > 0:
        free = [t for t in free if rng.random() >= options.caption_tag_dropout_rate]
    return ", ".join(kept + free + kept_suffix)
