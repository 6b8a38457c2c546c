"""Map diffusers UNet module paths to the original (sgm / sd-scripts) SDXL layout.

The mapping is computed from the UNet's own config (block types, layers per block), never
from a full-size table, so the tiny test model and the real SDXL go through the same code.
LoRA key names (`lora_unet_input_blocks_4_1_...`) and the single-file checkpoint
(`model.diffusion_model.input_blocks.4.1....`) are both built on `original_module_path`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

# Inside a ResNet block the original code uses Sequential indices.
_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}

_TOP_LEVEL = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


@dataclass(frozen=True)
class UNetBlockLayout:
    """What the mapping needs from a UNet config."""

    layers_per_block: int
    down_has_attention: tuple[bool, ...]
    up_has_attention: tuple[bool, ...]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "UNetBlockLayout":
        """The layout of a diffusers UNet config. Raises ValueError when layers_per_block is not one int."""
        layers = config["layers_per_block"]
        if not isinstance(layers, int):
            raise ValueError("layers_per_block must be one int for the SDXL layout")
        down = tuple("CrossAttn" in name for name in config["down_block_types"])
        up = tuple("CrossAttn" in name for name in config["up_block_types"])
        return cls(layers, down, up)


def _block_prefix(parts: list[str], layout: UNetBlockLayout) -> tuple[str, list[str]]:
    """Translate the leading block path; return (original prefix, remaining parts)."""
    lpb = layout.layers_per_block
    head = parts[0]
    if head == "down_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind in ("resnets", "attentions"):
            j = int(parts[3])
            index = 1 + i * (lpb + 1) + j
            return f"input_blocks.{index}.{0 if kind == 'resnets' else 1}", parts[4:]
        if kind == "downsamplers":  # down_blocks.i.downsamplers.0.conv -> input_blocks.N.0.op
            index = 1 + i * (lpb + 1) + lpb
            rest = parts[5:]
            return f"input_blocks.{index}.0.op", rest
    if head == "mid_block":
        kind, j = parts[1], int(parts[2])
        if kind == "resnets":
            return f"middle_block.{0 if j == 0 else 2}", parts[3:]
        if kind == "attentions":
            return "middle_block.1", parts[3:]
    if head == "up_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind in ("resnets", "attentions"):
            j = int(parts[3])
            index = i * (lpb + 1) + j
            return f"output_blocks.{index}.{0 if kind == 'resnets' else 1}", parts[4:]
        if kind == "upsamplers":  # up_blocks.i.upsamplers.0.conv -> output_blocks.N.{1|2}.conv
            index = i * (lpb + 1) + lpb
            slot = 2 if layout.up_has_attention[i] else 1
            return f"output_blocks.{index}.{slot}", parts[4:]
    raise KeyError(".".join(parts))


def original_module_path(diffusers_path: str, layout: UNetBlockLayout) -> str:
    """`down_blocks.1.attentions.0.proj_in` -> `input_blocks.4.1.proj_in` (parameters too:
    a trailing `.weight` / `.bias` passes through unchanged)."""
    for name, original in _TOP_LEVEL.items():
        if diffusers_path == name or diffusers_path.startswith(name + "."):
            return original + diffusers_path[len(name):]
    parts = diffusers_path.split(".")
    prefix, rest = _block_prefix(parts, layout)
    is_resnet = "resnets" in parts[:4]
    if is_resnet and rest:
        inner = rest[0]
        if inner in _RESNET_PARTS:
            rest = [_RESNET_PARTS[inner], *rest[1:]]
    return ".".join([prefix, *rest]) if rest else prefix


def diffusers_to_original_map(module_names: list[str], config: Mapping[str, Any]) -> dict[str, str]:
    """Map many diffusers names at once (module or parameter names)."""
    layout = UNetBlockLayout.from_config(config)
    return {name: original_module_path(name, layout) for name in module_names}
