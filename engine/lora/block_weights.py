"""SDXL UNet blocks in sd-scripts' numbering, and the optimizer groups that block learning-rate
weights and LoRA+ make (sd-scripts `networks/lora.py`: `get_block_index`,
`LoRANetwork.prepare_optimizer_params`).

Block index of a `lora_unet_` name: 0 = time/label embedding, 1 + n for `input_blocks_n`,
10 + n for `middle_block_n`, 13 + n for `output_blocks_n`, 22 = out.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence


def block_index(lora_name: str) -> int:
    """sd-scripts' SDXL `get_block_index`; -1 for a name outside the UNet's blocks."""
    if not lora_name.startswith("lora_unet_"):
        return -1
    name = lora_name[len("lora_unet_"):]
    if name.startswith(("time_embed_", "label_emb_")):
        return 0
    for prefix, base in (("input_blocks_", 1), ("middle_block_", 10), ("output_blocks_", 13)):
        if name.startswith(prefix):
            return base + int(name.split("_")[2])
    if name.startswith("out_"):
        return 22
    return -1


def _split_plus(modules: Sequence, ratio: Optional[float]) -> tuple[list, list]:
    """(other params, lora_up params): LoRA+ (Hayou et al. 2024) gives B = lora_up a higher rate."""
    plain, plus = [], []
    for module in modules:
        for name, param in module.named_parameters():
            (plus if ratio and "lora_up" in name else plain).append(param)
    return plain, plus


def part_groups(part: str, modules: Sequence, lr: float, block_lr_weight: Optional[Sequence[float]],
                loraplus_ratio: Optional[float]) -> list[dict[str, Any]]:
    """Optimizer groups of one part ("unet", "te1", "te2"). Parameters of a group whose rate is
    0 are frozen and left out, as sd-scripts skips a zero rate."""
    if not modules:
        return []
    if block_lr_weight is None:
        buckets = [(part, lr, list(modules))]
    else:
        by_block: dict[int, list] = {}
        for module in modules:
            by_block.setdefault(block_index(module.lora_name), []).append(module)
        buckets = [(f"{part}_block{index}", lr * block_lr_weight[index], members)
                   for index, members in sorted(by_block.items())]
    groups = []
    for name, rate, members in buckets:
        plain, plus = _split_plus(members, loraplus_ratio)
        for group_name, params, group_lr in ((name, plain, rate), (f"{name} plus", plus, rate * (loraplus_ratio or 0))):
            if not params:
                continue
            train = bool(group_lr)
            for p in params:
                p.requires_grad_(train)
            if train:
                groups.append({"name": group_name, "params": params, "lr": float(group_lr)})
    return groups
