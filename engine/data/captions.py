"""sd-scripts' per-sample caption processing, as a pure function of its inputs and an rng.

Order (as sd-scripts): prefix/suffix are added, then whole-caption dropout is decided
(`caption_dropout_rate`, or every n-th epoch), then the tags are split into kept and free
ones (`keep_tokens` or `keep_tokens_separator`), token warm-up trims the free tags, the free
tags are shuffled and tag dropout removes some, and the parts are joined again.
With `enable_wildcard`, before the tags are split, one line of a multi-line caption is drawn and
each `{a|b|c}` is replaced by one of its choices (`{{` / `}}` stay literal braces); without it a
multi-line caption keeps its first line (sd-scripts `BaseDataset.process_caption`).
Random draws come only from the `rng` passed in, in that order, so a seeded run repeats.

The join: sd-scripts joins the tags with ", " whatever `caption_separator` is, so with
`caption_separator = ". "` (and a secondary separator replaced by it) one caption mixes ". " and
", ". Here the tags are joined with the subset's own separator, followed by one space when it
has none (`,` -> ", ", the default, identical to sd-scripts; `;` -> "; ").
"""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CaptionOptions:
    """sd-scripts' caption options of one subset (shuffle, keep tokens, dropout, warm-up, wildcards), as the caption
    is built for each step."""
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
    enable_wildcard: bool = False

    @classmethod
    def from_subset(cls, subset) -> "CaptionOptions":
        """From a `SubsetSpec` (or anything with the same attribute names)."""
        return cls(**{name: getattr(subset, name) for name in cls.__dataclass_fields__})

    @property
    def is_static(self) -> bool:
        """True when the caption never changes between epochs (so text outputs can be cached)."""
        return not (self.shuffle_caption or self.caption_dropout_rate > 0 or self.caption_tag_dropout_rate > 0
                    or self.caption_dropout_every_n_epochs > 0 or self.token_warmup_step > 0
                    or self.enable_wildcard)


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

    if options.enable_wildcard:
        caption = expand_wildcards(caption, rng)
    else:
        caption = caption.split("\n")[0]

    warmup = _warmup_steps(options, max_train_steps)
    if options.shuffle_caption or warmup > 0 or options.caption_tag_dropout_rate > 0:
        caption = _rearrange_tags(caption, options, rng, warmup, step)

    if options.secondary_separator:
        caption = caption.replace(options.secondary_separator, options.caption_separator)
    return caption


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """One line of a multi-line caption, then `{a|b|c}` -> one of a, b, c (drawn from `rng`);
    `{{` and `}}` are literal braces (sd-scripts `process_caption`)."""
    if "\n" in caption:
        caption = rng.choice(caption.split("\n"))
    open_mark, close_mark = "\u2985", "\u2986"
    while open_mark in caption or close_mark in caption:
        open_mark += "\u2985"
        close_mark += "\u2986"
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = re.sub(r"\{([^}]+)\}", lambda match: rng.choice(match.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")


def tag_joiner(separator: str) -> str:
    """What re-joins split tags: the separator, with one space after it when it has none."""
    return separator if separator.endswith(" ") else separator + " "


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
    return tag_joiner(sep).join(kept + free + kept_suffix)
