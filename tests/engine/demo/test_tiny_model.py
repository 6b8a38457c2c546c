"""The tiny SDXL: SDXL's topology, both file forms, loaded by diffusers' own loaders."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from engine.demo import tiny_model as tm
from engine.model.single_file import single_file_to_diffusers, with_text_model_prefix

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _assert_same_tensors(name: str, left: dict, right: dict) -> None:
    assert left.keys() == right.keys(), f"{name}: keys differ: {sorted(set(left) ^ set(right))[:5]}"
    different = [key for key in left if not torch.equal(left[key], right[key])]
    assert not different, f"{name}: tensors differ: {different[:5]}"


@pytest.fixture(scope="module")
def folder_pipeline(tiny_model):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(tiny_model.diffusers_dir)


def test_single_file_loads_to_the_same_tensors_as_the_folder(tiny_model, folder_pipeline):
    from diffusers import StableDiffusionXLPipeline

    single = StableDiffusionXLPipeline.from_single_file(
        str(tiny_model.single_file), config=str(tiny_model.diffusers_dir), local_files_only=True)
    for name in COMPONENTS:
        _assert_same_tensors(name, getattr(folder_pipeline, name).state_dict(),
                             getattr(single, name).state_dict())


def test_component_from_single_file_matches_folder(tiny_model, folder_pipeline):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    for cls, sub in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")):
        model = cls.from_single_file(str(tiny_model.single_file), config=str(tiny_model.diffusers_dir),
                                     subfolder=sub, local_files_only=True)
        _assert_same_tensors(sub, getattr(folder_pipeline, sub).state_dict(), model.state_dict())


def test_our_reverse_conversion_matches_the_folder(tiny_model, folder_pipeline):
    unet = folder_pipeline.unet
    parts = single_file_to_diffusers(load_file(tiny_model.single_file), dict(unet.config),
                                     list(unet.state_dict()))
    _assert_same_tensors("unet", unet.state_dict(), parts.unet)
    _assert_same_tensors("vae", folder_pipeline.vae.state_dict(), parts.vae)
    _assert_same_tensors("text_encoder", with_text_model_prefix(folder_pipeline.text_encoder.state_dict()),
                         parts.text_encoder1)
    _assert_same_tensors("text_encoder_2", with_text_model_prefix(folder_pipeline.text_encoder_2.state_dict()),
                         parts.text_encoder2)


def test_single_file_uses_the_original_sdxl_layout(tiny_model):
    with safe_open(tiny_model.single_file, "pt") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        metadata = handle.metadata()
    prefixes = {"model.diffusion_model.", "conditioner.embedders.0.transformer.text_model.",
                "conditioner.embedders.1.model.", "first_stage_model."}
    assert all(any(key.startswith(p) for p in prefixes) for key in shapes)
    te2 = "conditioner.embedders.1.model."
    assert shapes[te2 + "text_projection"] == (tm.TE2_WIDTH, tm.TE2_PROJECTION)  # [width, proj]
    assert shapes[te2 + "transformer.resblocks.9.attn.in_proj_weight"] == (3 * tm.TE2_WIDTH, tm.TE2_WIDTH)
    assert shapes[te2 + "positional_embedding"] == (77, tm.TE2_WIDTH)
    for part in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj", "attn.out_proj"):
        assert te2 + f"transformer.resblocks.0.{part}.weight" in shapes
    assert te2 + "ln_final.weight" in shapes and te2 + "token_embedding.weight" in shapes
    assert shapes[te2 + "logit_scale"] == ()
    assert "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight" in shapes
    assert shapes["first_stage_model.encoder.mid.attn_1.q.weight"][2:] == (1, 1)
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in shapes
    assert "first_stage_model.encoder.down.0.block.1.conv2.weight" in shapes
    unet = "model.diffusion_model."
    for key in ("input_blocks.3.0.op.weight", "input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
                "middle_block.1.proj_in.weight", "middle_block.2.in_layers.2.weight",
                "output_blocks.2.2.conv.weight", "output_blocks.5.2.conv.weight",
                "output_blocks.8.0.skip_connection.weight", "out.2.weight"):
        assert unet + key in shapes, key
    assert shapes[unet + "label_emb.0.0.weight"] == (4 * tm.BASE_CHANNELS, tm.TE2_PROJECTION + 6 * 256)
    assert shapes[unet + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"][1] == tm.TE1_WIDTH + tm.TE2_WIDTH
    assert metadata["modelspec.architecture"] == "stable-diffusion-xl-v1-base"


def test_structure_is_sdxl_shaped(folder_pipeline):
    unet = folder_pipeline.unet.config
    assert list(unet.down_block_types) == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert list(unet.up_block_types) == ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert unet.mid_block_type == "UNetMidBlock2DCrossAttn"
    assert list(unet.block_out_channels) == [32, 64, 128] and unet.layers_per_block == 2
    head_sizes = {c // h for c, h in zip(unet.block_out_channels, unet.attention_head_dim)}
    assert head_sizes == {tm.HEAD_SIZE}
    assert unet.use_linear_projection and unet.addition_embed_type == "text_time"
    assert unet.addition_time_embed_dim == 256
    te1 = folder_pipeline.text_encoder.config
    te2 = folder_pipeline.text_encoder_2.config
    assert unet.cross_attention_dim == te1.hidden_size + te2.hidden_size
    assert unet.projection_class_embeddings_input_dim == te2.projection_dim + 6 * 256
    assert (te1.num_hidden_layers, te1.hidden_act) == (12, "quick_gelu")
    assert te2.hidden_act == "gelu" and te2.hidden_size != te2.projection_dim
    assert type(folder_pipeline.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    vae = folder_pipeline.vae.config
    assert len(vae.down_block_types) == 4 and vae.latent_channels == 4 and vae.scaling_factor == 0.13025
    scheduler = folder_pipeline.scheduler.config
    assert type(folder_pipeline.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (scheduler.beta_schedule, scheduler.beta_start, scheduler.beta_end) == ("scaled_linear", 0.00085, 0.012)
    assert (scheduler.num_train_timesteps, scheduler.prediction_type, scheduler.steps_offset,
            scheduler.timestep_spacing) == (1000, "epsilon", 1, "leading")


def test_tokenizers_pad_like_sdxl(folder_pipeline):
    tok1, tok2 = folder_pipeline.tokenizer, folder_pipeline.tokenizer_2
    assert tok1.model_max_length == tok2.model_max_length == 77
    assert tok1.pad_token == "<|endoftext|>" and tok2.pad_token == "!" and tok2.pad_token_id == 0
    assert len(tok1) == folder_pipeline.text_encoder.config.vocab_size
    caption = "a red circle on a white background"
    for tok, pad_id in ((tok1, tok1.eos_token_id), (tok2, 0)):
        ids = tok(caption, padding="max_length", max_length=77, truncation=True).input_ids
        assert len(ids) == 77
        words = tok.convert_ids_to_tokens(ids[1:8])
        assert words == [w + "</w>" for w in caption.split()]  # every demo word is one token
        assert ids[0] == tok.bos_token_id and ids[8] == tok.eos_token_id
        assert set(ids[9:]) == {pad_id}
    long_ids = tok1(" ".join(["red"] * 200), truncation=True, max_length=77).input_ids
    assert len(long_ids) == 77 and long_ids[-1] == tok1.eos_token_id


def test_pipeline_generates_an_image(folder_pipeline):
    image = folder_pipeline("a red circle", num_inference_steps=2, height=64, width=64,
                            output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 64, 64, 3)


def test_model_index_names_the_sdxl_pipeline(tiny_model):
    index = json.loads((tiny_model.diffusers_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]


def test_bpe_vocab_order_matches_clip():
    vocab = tm.build_vocab(tm.learn_bpe(["red", "circle"]))
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert list(vocab)[-2:] == [tm.BOS, tm.EOS]
    assert "red</w>" in vocab and "circle</w>" in vocab


@pytest.mark.slow
def test_same_seed_same_file_other_seed_other_weights(tiny_model, tmp_path):
    # Compare tensors, not bytes: safetensors does not fix the order of its JSON header.
    first = load_file(tiny_model.single_file)
    _assert_same_tensors("seed 0", first, load_file(tm.build_tiny_model(tmp_path / "again", seed=0).single_file))
    other = load_file(tm.build_tiny_model(tmp_path / "other", seed=1).single_file)
    assert not torch.equal(first["model.diffusion_model.out.2.weight"], other["model.diffusion_model.out.2.weight"])


def test_in_memory_modules_equal_the_written_model(folder_pipeline):
    modules = tm.make_tiny_modules(seed=0)
    pairs = (("unet", modules.unet), ("vae", modules.vae), ("text_encoder", modules.text_encoder1),
             ("text_encoder_2", modules.text_encoder2))
    for name, module in pairs:
        _assert_same_tensors(name, getattr(folder_pipeline, name).state_dict(), module.state_dict())


def test_full_size_sdxl_round_trips_through_diffusers_converters():
    """On SDXL's real architecture (meta tensors: names and shapes only), our single-file
    layout is what diffusers' own readers expect: each maps back to every parameter."""
    from diffusers.loaders import single_file_utils as sfu

    from engine.model.sdxl_configs import SDXL_UNET_CONFIG, build_sdxl_on_meta
    from engine.model.single_file import diffusers_to_single_file

    sdxl = build_sdxl_on_meta()
    parts = {name: getattr(sdxl, name).state_dict() for name in ("unet", "vae", "text_encoder1", "text_encoder2")}
    single = diffusers_to_single_file(parts["unet"], SDXL_UNET_CONFIG, parts["vae"],
                                      parts["text_encoder1"], parts["text_encoder2"])
    assert sfu.infer_diffusers_model_type(single) == "xl_base"

    def shapes(tensors):
        return {key: tuple(value.shape) for key, value in tensors.items()}

    unet = sfu.convert_ldm_unet_checkpoint(single, dict(SDXL_UNET_CONFIG))
    assert shapes(unet) == shapes(parts["unet"])
    vae = sfu.convert_ldm_vae_checkpoint(single, {"down_block_types": [0] * 4, "up_block_types": [0] * 4})
    assert shapes(vae) == shapes(parts["vae"])
    te1 = sfu.convert_ldm_clip_checkpoint(single)
    assert shapes(te1) == shapes(with_text_model_prefix(parts["text_encoder1"]))
    te2 = sfu.convert_open_clip_checkpoint(sdxl.text_encoder2, single, prefix="conditioner.embedders.1.model.")
    assert shapes(te2) == shapes(with_text_model_prefix(parts["text_encoder2"]))
    ours = single_file_to_diffusers(single, SDXL_UNET_CONFIG, list(parts["unet"]))
    assert shapes(ours.unet) == shapes(unet) and shapes(ours.vae) == shapes(vae)
    assert shapes(ours.text_encoder1) == shapes(te1) and shapes(ours.text_encoder2) == shapes(te2)
