"""`network_args` ("key=value" strings) -> typed options, checked before anything loads.

The keys are sd-scripts' (`networks/lora.py` `create_network`) for `networks.lora`, and
LyCORIS' (`lycoris/kohya.py` `create_network`) for `lycoris.kohya`. A key neither module
reads is refused by name: sd-scripts would pass it on and silently ignore it.

SDXL's UNet has 23 "blocks" in sd-scripts' numbering (`get_block_index`):
0 = time/label embedding, 1-9 = input_blocks 0-8, 10-12 = middle_block 0-2,
13-21 = output_blocks 0-8, 22 = out. `block_dims` and friends take 23 values in this order;
`down_lr_weight` / `up_lr_weight` take 9, `mid_lr_weight` 3 (shorter lists are filled with
1.0 as sd-scripts does; longer ones are refused, where sd-scripts would cut them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional

from engine.errors import ConfigError

SDXL_NUM_BLOCKS = 23
SDXL_DOWN_UP_BLOCKS = 9
SDXL_MID_BLOCKS = 3
NETWORK_MODULES = ("networks.lora", "lycoris.kohya")
LORA_KEYS = (
    "conv_dim", "conv_alpha", "rank_dropout", "module_dropout",
    "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas",
    "down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold",
    "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
)
LYCORIS_ALGOS = ("lora", "locon", "loha", "lokr", "ia3", "full")
LYCORIS_KEYS = (
    "algo", "conv_dim", "conv_alpha", "dropout", "rank_dropout", "module_dropout",
    "factor", "decompose_both", "use_tucker", "use_scalar", "dora_wd", "train_norm", "preset",
    "loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio",
    # handed to lycoris.kohya.create_network as they are, which reads them as it does for sd-scripts
    # (the kohya_ss GUI passes them): Tucker/CP aliases, LoKr block size, OFT constraint/rescale,
    # bypass forward, rank-stabilised scale, DoRA on the output axis, full matrices, factorisation
    "use_cp", "use_conv_cp", "disable_conv_cp", "block_size", "constraint", "rescaled", "bypass_mode", "rs_lora",
    "wd_on_output", "full_matrix", "unbalanced_factorization",
    # a module option that lycoris.kohya.create_network does not read (lycoris-lora 4.1): a no-op
    # under sd-scripts as here
    "rank_dropout_scale",
)
# LyCORIS presets whose targets on sd-scripts' SDXL UNet we reproduce (engine/lora/lycoris_adapter.py)
LYCORIS_PRESETS = ("full", "full-lin", "attn-mlp", "unet-only", "unet-transformer-only")
LR_WEIGHT_PRESETS = ("cosine", "sine", "linear", "reverse_linear", "zeros")


@dataclass(frozen=True)
class LoraArgs:
    """`networks.lora` network_args, parsed. Block lists hold 23 values (see module doc)."""

    conv_dim: Optional[int] = None
    conv_alpha: Optional[float] = None
    rank_dropout: Optional[float] = None
    module_dropout: Optional[float] = None
    block_dims: Optional[tuple[int, ...]] = None
    block_alphas: Optional[tuple[float, ...]] = None
    conv_block_dims: Optional[tuple[int, ...]] = None
    conv_block_alphas: Optional[tuple[float, ...]] = None
    block_lr_weight: Optional[tuple[float, ...]] = None
    loraplus_unet_ratio: Optional[float] = None
    loraplus_text_encoder_ratio: Optional[float] = None


def _err(key: str, message: str, hint: str) -> ConfigError:
    return ConfigError(f"network_args {key}: {message}", key="network_args", hint=hint)


def _number(args: Mapping[str, str], key: str, kind=float, low: Optional[float] = None,
            high: Optional[float] = None) -> Optional[float]:
    raw = args.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = kind(float(raw)) if kind is int else float(raw)
    except ValueError:
        raise _err(key, f"{raw!r} is not a number", f"write {key}=<number>") from None
    if (low is not None and value < low) or (high is not None and value > high) or not math.isfinite(value):
        raise _err(key, f"{raw!r} is out of range", f"use a value in [{low}, {high}]")
    return value


def _numbers(args: Mapping[str, str], key: str, kind=float, count: int = SDXL_NUM_BLOCKS) -> Optional[tuple]:
    raw = args.get(key)
    if raw is None or raw == "":
        return None
    try:
        values = tuple(kind(float(part)) if kind is int else float(part) for part in raw.split(","))
    except ValueError:
        raise _err(key, f"{raw!r} is not a comma list of numbers", f"give {count} numbers") from None
    if len(values) != count:
        raise _err(key, f"{len(values)} values given, SDXL has {count} blocks",
                   "order: embedding, input_blocks 0-8, middle_block 0-2, output_blocks 0-8, out")
    if any(v < 0 for v in values):
        raise _err(key, "negative values", "use values >= 0")
    return values


def _lr_list(raw: Optional[str], key: str, size: int) -> Optional[list[float]]:
    """sd-scripts' `get_block_lr_weight`: a comma list (empty items = 0, missing tail = 1.0) or
    a preset name with an optional `+base` (down/up only)."""
    if raw is None or raw == "":
        return None
    if "," in raw or key == "mid_lr_weight":
        try:
            values = [float(part) if part.strip() else 0.0 for part in raw.split(",")]
        except ValueError:
            raise _err(key, f"{raw!r} is not a comma list of numbers", f"give up to {size} numbers") from None
        if len(values) > size:
            raise _err(key, f"{len(values)} values given, SDXL has {size} here",
                       f"give at most {size} values (sd-scripts would silently cut the rest)")
        return values + [1.0] * (size - len(values))
    name, _, base = raw.partition("+")
    if name not in LR_WEIGHT_PRESETS:
        raise _err(key, f"{raw!r} is neither a comma list nor a preset",
                   f"use {', '.join(LR_WEIGHT_PRESETS)} (optionally +base), or list {size} values")
    try:
        offset = float(base) if base else 0.0
    except ValueError:
        raise _err(key, f"base {base!r} is not a number", "write e.g. cosine+0.5") from None
    steps = range(size)
    if name == "cosine":
        return [math.sin(math.pi * (i / (size - 1)) / 2) + offset for i in reversed(steps)]
    if name == "sine":
        return [math.sin(math.pi * (i / (size - 1)) / 2) + offset for i in steps]
    if name == "linear":
        return [i / (size - 1) + offset for i in steps]
    if name == "reverse_linear":
        return [i / (size - 1) + offset for i in reversed(steps)]
    return [offset] * size


def block_lr_weight(args: Mapping[str, str]) -> Optional[tuple[float, ...]]:
    """23 learning-rate weights (sd-scripts `get_block_lr_weight`), or None when no key is set.
    Weights at or below `block_lr_zero_threshold` become 0 (those blocks get no LoRA)."""
    down = _lr_list(args.get("down_lr_weight"), "down_lr_weight", SDXL_DOWN_UP_BLOCKS)
    mid = _lr_list(args.get("mid_lr_weight"), "mid_lr_weight", SDXL_MID_BLOCKS)
    up = _lr_list(args.get("up_lr_weight"), "up_lr_weight", SDXL_DOWN_UP_BLOCKS)
    if down is None and mid is None and up is None:
        return None
    threshold = _number(args, "block_lr_zero_threshold") or 0.0

    def cut(values: Optional[list[float]], size: int) -> list[float]:
        return [1.0] * size if values is None else [w if w > threshold else 0.0 for w in values]

    weights = cut(down, SDXL_DOWN_UP_BLOCKS) + cut(mid, SDXL_MID_BLOCKS) + cut(up, SDXL_DOWN_UP_BLOCKS)
    return tuple([1.0] + weights + [1.0])


def parse_lora_args(args: Mapping[str, str], network_dim: int, network_alpha: float) -> LoraArgs:
    """Check and parse `networks.lora` network_args (raises ConfigError naming the key)."""
    unknown = [key for key in args if key not in LORA_KEYS]
    if unknown:
        raise _err(unknown[0], "not a networks.lora option (sd-scripts would silently ignore it)",
                   f"known keys: {', '.join(LORA_KEYS)}")
    conv_dim = _number(args, "conv_dim", int, 1)
    conv_alpha = _number(args, "conv_alpha", float, 0)
    if conv_dim and conv_alpha is None:
        conv_alpha = 1.0  # sd-scripts' default when only conv_dim is given
    lr_weight = block_lr_weight(args)
    block_dims = _numbers(args, "block_dims", int)
    conv_block_dims = _numbers(args, "conv_block_dims", int)
    block_alphas = _numbers(args, "block_alphas")
    conv_block_alphas = _numbers(args, "conv_block_alphas")
    if block_dims is not None or lr_weight is not None:
        # sd-scripts' get_block_dims_and_alphas: per-block values, unset lists from the plain ones
        block_dims = block_dims or (network_dim,) * SDXL_NUM_BLOCKS
        block_alphas = block_alphas or (float(network_alpha),) * SDXL_NUM_BLOCKS
        if conv_block_dims is not None:
            conv_block_alphas = conv_block_alphas or ((conv_alpha or 1.0),) * SDXL_NUM_BLOCKS
        elif conv_dim:
            conv_block_dims, conv_block_alphas = (conv_dim,) * SDXL_NUM_BLOCKS, (conv_alpha,) * SDXL_NUM_BLOCKS
        if lr_weight is not None:  # sd-scripts' remove_block_dims_and_alphas: no rate, no module
            block_dims = tuple(0 if w == 0 else d for d, w in zip(block_dims, lr_weight))
            if conv_block_dims is not None:
                conv_block_dims = tuple(0 if w == 0 else d for d, w in zip(conv_block_dims, lr_weight))
    else:
        for key in ("block_alphas", "conv_block_dims", "conv_block_alphas"):
            if args.get(key):
                raise _err(key, "has no effect without block_dims (or a *_lr_weight)",
                           "add block_dims with 23 values, or remove it")
    ratio = _number(args, "loraplus_lr_ratio", float, 0)
    unet_ratio = _number(args, "loraplus_unet_lr_ratio", float, 0)
    te_ratio = _number(args, "loraplus_text_encoder_lr_ratio", float, 0)
    return LoraArgs(
        conv_dim=conv_dim, conv_alpha=conv_alpha,
        rank_dropout=_number(args, "rank_dropout", float, 0, 0.999),
        module_dropout=_number(args, "module_dropout", float, 0, 0.999),
        block_dims=block_dims, block_alphas=block_alphas, conv_block_dims=conv_block_dims,
        conv_block_alphas=conv_block_alphas, block_lr_weight=lr_weight,
        # sd-scripts: `unet ratio or general ratio` (so 0 falls back to the general one too)
        loraplus_unet_ratio=unet_ratio or ratio, loraplus_text_encoder_ratio=te_ratio or ratio,
    )


def check_lycoris_args(args: Mapping[str, str]) -> None:
    """Refuse keys and algorithms `lycoris.kohya` here does not take (raises ConfigError)."""
    unknown = [key for key in args if key not in LYCORIS_KEYS]
    if unknown:
        raise _err(unknown[0], "not a lycoris.kohya option handled here",
                   f"known keys: {', '.join(LYCORIS_KEYS)}")
    algo = (args.get("algo") or "lora").lower()
    if algo not in LYCORIS_ALGOS:
        raise _err("algo", f"{algo!r} is not supported", f"use one of {', '.join(LYCORIS_ALGOS)}")
    if args.get("preset", "full") not in LYCORIS_PRESETS:
        raise _err("preset", f"{args['preset']!r} is not a LyCORIS built-in preset",
                   f"use one of {', '.join(LYCORIS_PRESETS)} (preset files are not read here)")
    for key in ("conv_dim",):
        _number(args, key, int, 1)
    for key in ("conv_alpha", "dropout", "rank_dropout", "module_dropout", "loraplus_lr_ratio",
                "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        _number(args, key, float, 0)
    if args.get("factor"):
        _number(args, "factor", int, -1)
    for key in ("decompose_both", "use_tucker", "use_scalar", "dora_wd", "train_norm"):
        if key in args and args[key].lower() not in ("true", "false", "1", "0"):
            raise _err(key, f"{args[key]!r} is not true/false", f"write {key}=true or {key}=false")


def check_network_args(module: str, args: Mapping[str, str], network_dim: int, network_alpha: float) -> None:
    """All network_args checks for `module` (raises ConfigError)."""
    if module == "lycoris.kohya":
        check_lycoris_args(args)
    else:
        parse_lora_args(args, network_dim, network_alpha)
