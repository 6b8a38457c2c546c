"""Models the LoRA tests build networks on: SDXL on the meta device, and tiny real parts."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def meta_sdxl():
    from engine.model.sdxl_configs import build_sdxl_on_meta

    return build_sdxl_on_meta(with_vae=False)


@pytest.fixture()
def small_parts():
    """SDXL-topology UNet and the two CLIP text models at a tiny width (in memory)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from engine.demo.tiny_model import text_encoder_config, unet_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config())
    te1 = CLIPTextModel(text_encoder_config(32, 12, 4, "quick_gelu", 32, 100, 99))
    te2 = CLIPTextModelWithProjection(text_encoder_config(48, 10, 4, "gelu", 40, 100, 0))
    return unet, te1, te2
