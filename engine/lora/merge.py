"""Merge kohya LoRA files into the base model's weights (`base_weights`, sd-scripts'
`--base_weights` / `--base_weights_multiplier`: merged before training, never trained).

W <- W + multiplier · (alpha / rank) · up @ down, computed in fp32 and stored in W's dtype
(sd-scripts `networks/lora.py` LoRAInfModule.merge_to).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

from engine.errors import ConfigError


def merge_state_dict(unet, text_encoder1, text_encoder2, tensors: Mapping, multiplier: float, *,
                     source: str = "base_weights") -> int:
    """Add a kohya state dict's updates to the layers it names; returns the modules merged.
    Raises ConfigError when a key names no layer of this model."""
    import torch

    from engine.lora.network import create_network, dims_from_state_dict

    dims = dims_from_state_dict(tensors)
    network = create_network(unet, text_encoder1, text_encoder2, dim=1, alpha=1.0, module_dims=dims)
    known = {module.lora_name for module in network.lora_modules()}
    strays = sorted(set(dims) - known)
    if strays:
        raise ConfigError(f"{source}: {len(strays)} modules name no layer of this SDXL model, e.g. {strays[0]}",
                          key="base_weights", hint="use a LoRA made for SDXL (kohya key layout)")
    own = {k for k in network.state_dict()}
    network.load_kohya_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
    with torch.no_grad():
        for module in network.lora_modules():
            weight = module.org_module.weight
            delta = module.delta_weight().to(weight.device) * multiplier
            weight.copy_((weight.float() + delta.reshape(weight.shape)).to(weight.dtype))
    return len(known)


def merge_base_weights(model, paths: Sequence[str], multipliers: Optional[Sequence[float]] = None) -> list[int]:
    """Merge every `base_weights` file (multiplier 1.0 where none is given) into `model`."""
    from engine.lora.file import load_lora

    multipliers = list(multipliers or []) or [1.0] * len(paths)
    merged = []
    for path, multiplier in zip(paths, multipliers):
        tensors, _ = load_lora(path)
        merged.append(merge_state_dict(model.unet, model.text_encoder1, model.text_encoder2, tensors, multiplier,
                                       source=Path(path).name))
    return merged
