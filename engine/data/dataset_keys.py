"""The keys sd-scripts' dataset TOML accepts, where each may appear, their checks and defaults.

Each checker returns the normalised value or raises ValueError(what was expected).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

Resolution = tuple[int, int]


# --- value checkers: each returns the normalised value or raises ValueError(expected) -------

def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError("true or false")


def _int(minimum: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("an integer" + (f" >= {minimum}" if minimum is not None else ""))
        if minimum is not None and v < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return v
    return check


def _float(lo: float | None = None, hi: float | None = None) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        text = "a number" + (f" from {lo} to {hi}" if lo is not None and hi is not None else
                             f" >= {lo}" if lo is not None else "")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise ValueError(text)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError(text)
        return float(v)
    return check


def _fraction_below_one(v: Any) -> float:
    value = _float(0.0, 1.0)(v)
    if value >= 1.0:
        raise ValueError("a number from 0 up to (not including) 1")
    return value


def _str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise ValueError("a string")


def _extension(v: Any) -> str:
    """sd-scripts adds the dot when a caption extension lacks one ("txt" -> ".txt")."""
    text = _str(v) if isinstance(v, str) and v.strip(".") else ""
    if not text:
        raise ValueError('a file extension such as ".txt"')
    return text if text.startswith(".") else "." + text


def _opt_str(v: Any) -> Optional[str]:
    return None if v is None else _str(v)


def _resolution(v: Any) -> Resolution:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return (v, v)
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
        return (int(v[0]), int(v[1]))
    raise ValueError("a positive integer or [width, height]")


def _float_pair(v: Any) -> tuple[float, float]:
    if (isinstance(v, (list, tuple)) and len(v) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
        return (float(v[0]), float(v[1]))
    raise ValueError("[low, high]")


INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box")


def _interpolation(v: Any) -> Optional[str]:
    if v is None:
        return None
    if isinstance(v, str) and v in INTERPOLATIONS:
        return v
    raise ValueError("one of " + ", ".join(INTERPOLATIONS))


@dataclass(frozen=True)
class KeySpec:
    """How one dataset TOML key is checked (`check` returns the value or raises ValueError) and its default."""
    check: Callable[[Any], Any]
    default: Any


# Dataset-level keys (allowed in [general] and [[datasets]]).
DATASET_KEYS: dict[str, KeySpec] = {
    "resolution": KeySpec(_resolution, None),
    "batch_size": KeySpec(_int(1), 1),
    "enable_bucket": KeySpec(_bool, False),
    "min_bucket_reso": KeySpec(_int(1), 256),
    "max_bucket_reso": KeySpec(_int(1), 1024),
    "bucket_reso_steps": KeySpec(_int(1), 64),
    "bucket_no_upscale": KeySpec(_bool, False),
    "network_multiplier": KeySpec(_float(), 1.0),
    "resize_interpolation": KeySpec(_interpolation, None),
    # sd-scripts validation split: the held-out images are not trained (engine/data/validation_split.py).
    "validation_split": KeySpec(_fraction_below_one, 0.0),
    "validation_seed": KeySpec(lambda v: None if v is None else _int(0)(v), None),
}

# Subset-level keys (allowed at any level).
SUBSET_KEYS: dict[str, KeySpec] = {
    "num_repeats": KeySpec(_int(1), 1),
    "shuffle_caption": KeySpec(_bool, False),
    "caption_separator": KeySpec(_str, ","),
    "secondary_separator": KeySpec(_opt_str, None),
    "keep_tokens": KeySpec(_int(0), 0),
    "keep_tokens_separator": KeySpec(_str, ""),
    "color_aug": KeySpec(_bool, False),
    "flip_aug": KeySpec(_bool, False),
    "random_crop": KeySpec(_bool, False),
    "caption_prefix": KeySpec(_opt_str, None),
    "caption_suffix": KeySpec(_opt_str, None),
    "caption_dropout_rate": KeySpec(_float(0.0, 1.0), 0.0),
    "caption_dropout_every_n_epochs": KeySpec(_int(0), 0),
    "caption_tag_dropout_rate": KeySpec(_float(0.0, 1.0), 0.0),
    "caption_extension": KeySpec(_extension, ".caption"),
    "class_tokens": KeySpec(_opt_str, None),
    "token_warmup_min": KeySpec(_int(1), 1),
    "token_warmup_step": KeySpec(_float(0.0), 0.0),
    # Accepted for compatibility; only their "off" values are supported.
    "enable_wildcard": KeySpec(_bool, False),
    "face_crop_aug_range": KeySpec(lambda v: None if v is None else _unsupported_pair(v), None),
    "cache_info": KeySpec(_bool, False),
    # sd-scripts: a subset's resize_interpolation wins over its dataset's.
    "resize_interpolation": KeySpec(_interpolation, None),
    "custom_attributes": KeySpec(lambda v: None if v is None else _mapping(v), None),
    # sd-scripts' --alpha_mask / --conditioning_data_dir set these for every subset, so they may sit in
    # [general]; both are refused by engine/config/rules.py while masked loss is not supported.
    "alpha_mask": KeySpec(_bool, False),
    "conditioning_data_dir": KeySpec(_opt_str, None),
}

# Keys only a subset may carry.
SUBSET_ONLY_KEYS: dict[str, KeySpec] = {
    "image_dir": KeySpec(_opt_str, None),
    "metadata_file": KeySpec(_opt_str, None),
    "is_reg": KeySpec(_bool, False),
}


def _mapping(v: Any) -> dict:
    if isinstance(v, dict):
        return dict(v)
    raise ValueError("a table of key = value pairs")


def _unsupported(what: str) -> bool:
    raise ValueError(f"false ({what} is not supported by sdxl-tui)")


def _unsupported_pair(v: Any) -> None:
    _float_pair(v)
    raise ValueError("unset (face_crop_aug_range is not supported by sdxl-tui)")


GENERAL_VALID = [*DATASET_KEYS, *SUBSET_KEYS]
DATASET_VALID = [*DATASET_KEYS, *SUBSET_KEYS, "subsets"]
SUBSET_VALID = [*SUBSET_KEYS, *SUBSET_ONLY_KEYS]
