"""Key conversion between diffusers / transformers state dicts and SDXL's single-file layout.

The single file (sd_xl_base_1.0.safetensors, and what A1111 / ComfyUI / sd-scripts read and
write) holds four models under fixed prefixes:

- `model.diffusion_model.*`  UNet, original (sgm) block names; see engine/model/sdxl_layout.py
- `conditioner.embedders.0.transformer.text_model.*`  text encoder 1, Hugging Face CLIP names
- `conditioner.embedders.1.model.*`  text encoder 2, OpenCLIP names: fused q/k/v
  (`attn.in_proj_weight`), `ln_1/ln_2`, `mlp.c_fc/c_proj`, `ln_final`, `positional_embedding`,
  and `text_projection` stored as [width, projection] (the transpose of HF's Linear weight)
- `first_stage_model.*`  VAE, original ldm names (`encoder.down.N.block.M`, `mid.attn_1`
  with 1x1-conv q/k/v/proj_out weights, decoder `up.N` numbered from the bottom).

Every function here is pure (dict in, dict out) and works for any width and depth, so the
tiny model and the real one take the same path. The conversions are exact inverses.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from engine.model.sdxl_layout import UNetBlockLayout, original_module_path

UNET_PREFIX = "model.diffusion_model."
TE1_PREFIX = "conditioner.embedders.0.transformer."
TE2_PREFIX = "conditioner.embedders.1.model."
VAE_PREFIX = "first_stage_model."
PREFIXES = (UNET_PREFIX, TE1_PREFIX, TE2_PREFIX, VAE_PREFIX)

# Non-persistent buffers some writers include; never needed to rebuild a model.
_SKIPPED_SUFFIXES = ("position_ids",)


@dataclass
class SingleFileParts:
    """The four models of a single file, each keyed as its diffusers / transformers class
    expects (text encoders with the `text_model.` prefix)."""

    unet: dict
    vae: dict
    text_encoder1: dict
    text_encoder2: dict


# ---------------------------------------------------------------- UNet

def unet_to_original(state_dict: Mapping[str, Any], unet_config: Mapping[str, Any]) -> dict:
    """diffusers UNet weights under the original (Stability AI, model.diffusion_model.*) key names; `unet_config`
    gives the block layout."""
    layout = UNetBlockLayout.from_config(unet_config)
    return {original_module_path(key, layout): value for key, value in state_dict.items()}


def unet_from_original(state_dict: Mapping[str, Any], unet_config: Mapping[str, Any],
                       diffusers_keys: list[str]) -> dict:
    """Invert `unet_to_original` over the parameter names a diffusers UNet of this config has."""
    layout = UNetBlockLayout.from_config(unet_config)
    inverse = {original_module_path(key, layout): key for key in diffusers_keys}
    unknown = [key for key in state_dict if key not in inverse]
    if unknown:
        raise KeyError(f"UNet keys with no diffusers counterpart: {unknown[:5]}")
    return {inverse[key]: value for key, value in state_dict.items()}


# ---------------------------------------------------------------- VAE

_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_ATTENTION_BACK = {v: k for k, v in _VAE_ATTENTION.items()}


def _vae_key_to_original(key: str, levels: int) -> str:
    key = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", key)
    key = key.replace("conv_shortcut", "nin_shortcut")
    match = re.match(r"^encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.*)$", key)
    if match:
        i, kind, j, rest = match.groups()
        if kind == "resnets":
            return f"encoder.down.{i}.block.{j}.{rest}"
        return f"encoder.down.{i}.downsample.{rest}"
    match = re.match(r"^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.*)$", key)
    if match:
        i, kind, j, rest = match.groups()
        level = levels - 1 - int(i)  # the original decoder numbers levels from the bottom
        if kind == "resnets":
            return f"decoder.up.{level}.block.{j}.{rest}"
        return f"decoder.up.{level}.upsample.{rest}"
    match = re.match(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)$", key)
    if match:
        side, k, rest = match.groups()
        return f"{side}.mid.block_{int(k) + 1}.{rest}"
    match = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)$", key)
    if match:
        side, part, rest = match.groups()
        return f"{side}.mid.attn_1.{_VAE_ATTENTION[part]}.{rest}"
    return key


def _vae_key_from_original(key: str, levels: int) -> str:
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    key = key.replace("nin_shortcut", "conv_shortcut")
    match = re.match(r"^encoder\.down\.(\d+)\.(block\.(\d+)|downsample)\.(.*)$", key)
    if match:
        i, kind, j, rest = match.groups()
        if j is not None:
            return f"encoder.down_blocks.{i}.resnets.{j}.{rest}"
        return f"encoder.down_blocks.{i}.downsamplers.0.{rest}"
    match = re.match(r"^decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.(.*)$", key)
    if match:
        level, kind, j, rest = match.groups()
        i = levels - 1 - int(level)
        if j is not None:
            return f"decoder.up_blocks.{i}.resnets.{j}.{rest}"
        return f"decoder.up_blocks.{i}.upsamplers.0.{rest}"
    match = re.match(r"^(encoder|decoder)\.mid\.block_(\d+)\.(.*)$", key)
    if match:
        side, k, rest = match.groups()
        return f"{side}.mid_block.resnets.{int(k) - 1}.{rest}"
    match = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(.*)$", key)
    if match:
        side, part, rest = match.groups()
        return f"{side}.mid_block.attentions.0.{_VAE_ATTENTION_BACK[part]}.{rest}"
    return key


def _vae_levels(keys, pattern: str) -> int:
    found = {int(m.group(1)) for key in keys if (m := re.match(pattern, key))}
    if not found:
        raise KeyError("no VAE down blocks found")
    return max(found) + 1


def vae_to_original(state_dict: Mapping[str, Any]) -> dict:
    """diffusers VAE weights under the original key names; mid-block attention weights become 1x1 convolutions ([out,
    in] -> [out, in, 1, 1])."""
    levels = _vae_levels(state_dict, r"^encoder\.down_blocks\.(\d+)\.")
    out = {}
    for key, value in state_dict.items():
        new = _vae_key_to_original(key, levels)
        if ".mid.attn_1." in new and new.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original attention uses 1x1 convolutions
        out[new] = value
    return out


def vae_from_original(state_dict: Mapping[str, Any]) -> dict:
    """Original VAE weights under diffusers key names; the 1x1 convolution attention weights become linear ([out, in,
    1, 1] -> [out, in])."""
    levels = _vae_levels(state_dict, r"^encoder\.down\.(\d+)\.")
    out = {}
    for key, value in state_dict.items():
        new = _vae_key_from_original(key, levels)
        if ".mid_block.attentions.0." in new and new.endswith(".weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[new] = value
    return out


# ---------------------------------------------------------------- text encoder 1 (CLIP-L)

def with_text_model_prefix(state_dict: Mapping[str, Any]) -> dict:
    """transformers >= 5.6 saves CLIPTextModel without `text_model.`; the classic names
    (and every single-file reader) have it."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(_SKIPPED_SUFFIXES):
            continue
        if not key.startswith(("text_model.", "text_projection")):
            key = "text_model." + key
        out[key] = value
    return out


def clip_l_to_original(state_dict: Mapping[str, Any]) -> dict:
    """CLIP ViT-L weights under the original names (transformers' keys with the text_model. prefix)."""
    return with_text_model_prefix(state_dict)


def clip_l_from_original(state_dict: Mapping[str, Any]) -> dict:
    """Original CLIP ViT-L weights for transformers, without the buffers it does not load (position_ids)."""
    return {k: v for k, v in state_dict.items() if not k.endswith(_SKIPPED_SUFFIXES)}


# ---------------------------------------------------------------- text encoder 2 (bigG)

_OPENCLIP_LAYER_PARTS = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPENCLIP_TOP = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_RESBLOCK = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
_IN_PROJ = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")


def clip_g_to_openclip(state_dict: Mapping[str, Any]) -> dict:
    """HF CLIPTextModelWithProjection names -> OpenCLIP names (q/k/v fused, projection transposed)."""
    import torch

    source = with_text_model_prefix(state_dict)
    out: dict = {}
    qkv: dict[tuple[str, str], dict[str, Any]] = {}
    for key, value in source.items():
        if key in _OPENCLIP_TOP:
            out[_OPENCLIP_TOP[key]] = value
        elif key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
        elif match := _LAYER.match(key):
            layer, part, kind = match.groups()
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                qkv.setdefault((layer, kind), {})[part[10]] = value
            elif part in _OPENCLIP_LAYER_PARTS:
                out[f"transformer.resblocks.{layer}.{_OPENCLIP_LAYER_PARTS[part]}.{kind}"] = value
            else:
                raise KeyError(f"unexpected text encoder 2 key: {key}")
        else:
            raise KeyError(f"unexpected text encoder 2 key: {key}")
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    # OpenCLIP's contrastive temperature: unused by a text encoder, but SDXL files carry it
    # and some readers (sd-scripts) pass it through; ln(100) is the trained CLIP value.
    out["logit_scale"] = torch.tensor(math.log(100.0), dtype=torch.float32)
    return out


def clip_g_from_openclip(state_dict: Mapping[str, Any]) -> dict:
    """OpenCLIP names -> HF CLIPTextModelWithProjection names (with `text_model.`)."""
    top_back = {v: k for k, v in _OPENCLIP_TOP.items()}
    parts_back = {v: k for k, v in _OPENCLIP_LAYER_PARTS.items()}
    width = state_dict["positional_embedding"].shape[1]
    out: dict = {}
    for key, value in state_dict.items():
        if key in top_back:
            out[top_back[key]] = value
        elif key == "text_projection":
            out["text_projection.weight"] = value.T.contiguous()
        elif match := _IN_PROJ.match(key):
            layer, kind = match.groups()
            for index, name in enumerate("qkv"):
                out[f"text_model.encoder.layers.{layer}.self_attn.{name}_proj.{kind}"] = \
                    value[index * width:(index + 1) * width].clone()
        elif (match := _RESBLOCK.match(key)) and match.group(2) in parts_back:
            layer, part, kind = match.groups()
            out[f"text_model.encoder.layers.{layer}.{parts_back[part]}.{kind}"] = value
        elif key in ("logit_scale", "attn_mask"):
            continue  # OpenCLIP extras a text model does not use
        else:
            raise KeyError(f"unexpected OpenCLIP key: {key}")
    return out


# ---------------------------------------------------------------- whole file

def diffusers_to_single_file(unet: Mapping[str, Any], unet_config: Mapping[str, Any], vae: Mapping[str, Any],
                             text_encoder1: Mapping[str, Any], text_encoder2: Mapping[str, Any]) -> dict:
    """One dict in SDXL's single-file layout (tensors are shared, not copied, where possible)."""
    out: dict = {}
    parts = (
        (UNET_PREFIX, unet_to_original(unet, unet_config)),
        (TE1_PREFIX, clip_l_to_original(text_encoder1)),
        (TE2_PREFIX, clip_g_to_openclip(text_encoder2)),
        (VAE_PREFIX, vae_to_original(vae)),
    )
    for prefix, tensors in parts:
        for key, value in tensors.items():
            out[prefix + key] = value.contiguous()
    return out


def split_by_prefix(tensors: Mapping[str, Any]) -> dict[str, dict]:
    """{prefix: {key without prefix: tensor}} for the four known prefixes; others dropped."""
    groups: dict[str, dict] = {prefix: {} for prefix in PREFIXES}
    for key, value in tensors.items():
        for prefix in PREFIXES:
            if key.startswith(prefix):
                groups[prefix][key[len(prefix):]] = value
                break
    return groups


def single_file_to_diffusers(tensors: Mapping[str, Any], unet_config: Mapping[str, Any],
                             unet_keys: list[str]) -> SingleFileParts:
    """Split and rename a single-file checkpoint; `unet_keys` are a diffusers UNet's parameter names."""
    groups = split_by_prefix(tensors)
    return SingleFileParts(
        unet=unet_from_original(groups[UNET_PREFIX], unet_config, unet_keys),
        vae=vae_from_original(groups[VAE_PREFIX]),
        text_encoder1=clip_l_from_original(groups[TE1_PREFIX]),
        text_encoder2=clip_g_from_openclip(groups[TE2_PREFIX]),
    )
