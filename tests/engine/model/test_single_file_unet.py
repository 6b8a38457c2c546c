"""engine.model.single_file_load: the UNet read tensor by tensor into the training dtype (issue 17),
equal to diffusers' own `from_single_file`, with diffusers' converter as the fallback."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.config.schema import ModelSection
from engine.model.load import load_sdxl
from engine.model.single_file_load import _unet


@pytest.fixture(scope="module")
def half_file(tiny_model, tmp_path_factory):
    """The tiny model as most SDXL files are shipped: fp16."""
    path = tmp_path_factory.mktemp("half") / "half.safetensors"
    save_file({k: v.half() for k, v in load_file(tiny_model.single_file).items()}, str(path))
    return path


def _diffusers_unet(path, config_dir, dtype):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_single_file(str(path), config=str(config_dir), subfolder="unet",
                                                 local_files_only=True, torch_dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_our_unet_equals_diffusers_from_single_file(tiny_model, half_file, dtype):
    ours = _unet(half_file, tiny_model.diffusers_dir, dtype).state_dict()
    theirs = _diffusers_unet(half_file, tiny_model.diffusers_dir, dtype).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert {t.dtype for t in ours.values()} == {dtype}
    assert not any(t.is_meta for t in ours.values())


def test_load_sdxl_loads_unet_and_text_encoders_straight_into_the_training_dtype(tiny_model, half_file):
    loaded = load_sdxl(ModelSection(pretrained_model_name_or_path=str(half_file),
                                    tokenizer_cache_dir=str(tiny_model.diffusers_dir)), dtype=torch.bfloat16)
    reference = load_sdxl(ModelSection(pretrained_model_name_or_path=str(half_file),
                                       tokenizer_cache_dir=str(tiny_model.diffusers_dir)))
    for name in ("unet", "text_encoder1", "text_encoder2"):
        ours, fp32 = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        floats = [k for k in ours if ours[k].is_floating_point()]
        assert floats and {ours[k].dtype for k in floats} == {torch.bfloat16}, name
        # fp16 -> bf16 directly rounds as fp16 -> fp32 -> bf16 did (the old load, then the cast)
        assert all(torch.equal(ours[k], fp32[k].to(torch.bfloat16)) for k in floats), name
    assert {t.dtype for t in loaded.vae.state_dict().values()} == {torch.float32}  # cast later, or kept (no_half_vae)


def test_a_unet_key_our_conversion_does_not_know_falls_back_to_diffusers(tiny_model, half_file, tmp_path):
    tensors = load_file(half_file)
    tensors["model.diffusion_model.some_new_block.weight"] = torch.zeros(3, dtype=torch.float16)
    odd = tmp_path / "odd.safetensors"
    save_file(tensors, str(odd))
    unet = _unet(odd, tiny_model.diffusers_dir, torch.float32).state_dict()
    reference = _unet(half_file, tiny_model.diffusers_dir, torch.float32).state_dict()
    assert unet.keys() == reference.keys() and all(torch.equal(unet[k], reference[k]) for k in unet)
