"""Module names -> sd-scripts (kohya) LoRA names, and the reverse questions `inspect` asks.

sd-scripts names a LoRA module `prefix + module path with '.' -> '_'`, where the UNet path is
the one in the original (sgm) SDXL layout and text-encoder paths are the classic Hugging Face
CLIP names (`text_model.encoder.layers.N...`). The UNet part goes through
`engine.model.sdxl_layout`, which derives the block numbering from the UNet's own config.
"""
from __future__ import annotations

from engine.model.sdxl_layout import UNetBlockLayout, original_module_path

UNET_PREFIX = "lora_unet_"
TE_PREFIXES = {1: "lora_te1_", 2: "lora_te2_"}
PART_PREFIXES = {"unet": UNET_PREFIX, "te1": TE_PREFIXES[1], "te2": TE_PREFIXES[2]}
KOHYA_SUFFIXES = (".lora_down.weight", ".lora_up.weight", ".alpha")


def unet_lora_name(diffusers_path: str, layout: UNetBlockLayout) -> str:
    """`down_blocks.1.attentions.0.proj_in` -> `lora_unet_input_blocks_4_1_proj_in`."""
    return UNET_PREFIX + original_module_path(diffusers_path, layout).replace(".", "_")


def classic_clip_path(module_path: str) -> str:
    """Module path inside a CLIP text model, in the classic `text_model.` form.

    transformers >= 5.6 builds `CLIPTextModel` without the `text_model` wrapper
    (`encoder.layers.0...`), while `CLIPTextModelWithProjection` still has it; sd-scripts,
    diffusers' converter and ComfyUI all expect `text_model.encoder...`.
    """
    path = module_path.removeprefix("text_model.")
    return "text_model." + path


def text_encoder_lora_name(module_path: str, index: int) -> str:
    """`encoder.layers.3.self_attn.q_proj`, 1 -> `lora_te1_text_model_encoder_layers_3_self_attn_q_proj`."""
    return TE_PREFIXES[index] + classic_clip_path(module_path).replace(".", "_")


def part_of(lora_name: str) -> str | None:
    """'unet', 'te1', 'te2' for a kohya module name, None when it has no known prefix."""
    for part, prefix in PART_PREFIXES.items():
        if lora_name.startswith(prefix):
            return part
    return None


def split_kohya_key(key: str) -> tuple[str, str] | None:
    """`lora_unet_x.lora_down.weight` -> (`lora_unet_x`, `lora_down.weight`); None if not kohya-shaped."""
    for suffix in KOHYA_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix[1:]
    return None
