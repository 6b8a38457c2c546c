"""Bytes of the full-size SDXL UNet's frozen weights in bf16 and with fp8_base (no memory is
allocated: the UNet is built on the meta device and each parameter's size is counted).

fp8_base stores every nn.Linear / nn.Conv2d weight as float8_e4m3fn (1 byte) and keeps biases,
norms and embeddings in the compute dtype (engine/train/precision.py). The peak RSS of a training
step is measured by `train_step.py --case model=sdxl,resolution=128,fp8_base=true` (a child
process per case, the UNet materialised one layer at a time).
"""
from __future__ import annotations

import json


def weight_bytes() -> dict:
    import torch
    from diffusers import UNet2DConditionModel

    from engine.model.sdxl_configs import SDXL_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET_CONFIG)
    total = fp8_stored = 0
    for module in unet.modules():
        for name, param in module.named_parameters(recurse=False):
            total += param.numel()
            if name == "weight" and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                fp8_stored += param.numel()
    bf16 = total * 2
    fp8 = fp8_stored * 1 + (total - fp8_stored) * 2
    return {"parameters": total, "fp8_stored_parameters": fp8_stored, "bf16_bytes": bf16, "fp8_base_bytes": fp8,
            "bf16_gib": round(bf16 / 2**30, 3), "fp8_base_gib": round(fp8 / 2**30, 3), "ratio": round(fp8 / bf16, 4)}


if __name__ == "__main__":
    print(json.dumps(weight_bytes(), indent=1))
