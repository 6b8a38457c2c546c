"""engine.model.source: recognising model sources, refusing non-SDXL files, loading SDXL."""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.config.schema import ModelSection
from engine.errors import ModelError
from engine.model.load import load_sdxl, load_vae, make_noise_scheduler
from engine.model.source import check_sdxl_shape, detect_model_source


def _same(left: dict, right: dict) -> bool:
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


# ---------------------------------------------------------------- detect_model_source

def test_detects_the_three_kinds(tiny_model):
    folder = detect_model_source(str(tiny_model.diffusers_dir))
    assert folder.kind == "diffusers" and folder.size_bytes > 1_000_000 and "MB" in folder.description
    single = detect_model_source(str(tiny_model.single_file))
    assert single.kind == "single_file" and single.size_bytes == tiny_model.single_file.stat().st_size
    hub = detect_model_source("stabilityai/stable-diffusion-xl-base-1.0")
    assert (hub.kind, hub.path, hub.size_bytes) == ("hub", "stabilityai/stable-diffusion-xl-base-1.0", None)


@pytest.mark.parametrize("text", ["/nope/model.safetensors", "./missing", "~/not-here", "model.safetensors",
                                  "not a hub id", "a/b/c"])
def test_missing_local_paths_are_not_found(text):
    with pytest.raises(ModelError, match="not found"):
        detect_model_source(text)


def test_empty_is_an_error():
    with pytest.raises(ModelError, match="no model given"):
        detect_model_source("  ")


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".bin"])
def test_pickle_files_are_refused_with_a_way_out(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelError, match="pickle") as caught:
        detect_model_source(str(path))
    assert "safetensors" in caught.value.hint


def test_folder_without_a_model_is_explained(tmp_path):
    with pytest.raises(ModelError, match="not a diffusers model"):
        detect_model_source(str(tmp_path))


def test_the_cheap_checks_never_import_torch(tiny_model):
    code = (
        "import sys\n"
        "from engine.model.source import detect_model_source, check_sdxl_shape\n"
        f"for p in [{str(tiny_model.diffusers_dir)!r}, {str(tiny_model.single_file)!r}]:\n"
        "    check_sdxl_shape(detect_model_source(p))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ---------------------------------------------------------------- check_sdxl_shape

def test_tiny_model_is_sdxl_shaped_in_both_forms(tiny_model):
    for path in (tiny_model.diffusers_dir, tiny_model.single_file):
        shape = check_sdxl_shape(detect_model_source(str(path)))
        assert shape.cross_attention_dim == sum(shape.text_encoder_widths) == 80
        assert shape.has_vae and not shape.is_sdxl_base_size


def _fake_checkpoint(path, tensors: dict[str, tuple[int, ...]]):
    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in tensors.items()}, str(path))
    return detect_model_source(str(path))


TO_K = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"


@pytest.mark.parametrize("tensors, message", [
    ({TO_K: (320, 768), "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)},
     "Stable Diffusion 1.x"),
    ({TO_K: (320, 1024), "cond_stage_model.model.ln_final.weight": (1024,)}, "Stable Diffusion 2.x"),
    ({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": (4, 64)}, "LoRA file"),
    ({"encoder.down.0.block.0.conv1.weight": (8, 8, 3, 3), "decoder.conv_out.weight": (3, 8, 3, 3)}, "VAE alone"),
    ({TO_K: (640, 1280), "conditioner.embedders.0.model.ln_final.weight": (1280,)}, "refiner"),
    ({"foo.weight": (2,)}, "does not look like a Stable Diffusion"),
])
def test_other_models_are_named(tmp_path, tensors, message):
    with pytest.raises(ModelError, match=message):
        check_sdxl_shape(_fake_checkpoint(tmp_path / "other.safetensors", tensors))


def test_full_size_sdxl_header_is_recognised(tmp_path):
    shape = check_sdxl_shape(_fake_checkpoint(tmp_path / "sdxl.safetensors", {
        TO_K: (640, 2048), "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "first_stage_model.decoder.conv_out.weight": (3, 128, 3, 3),
    }))
    assert shape.is_sdxl_base_size and shape.description == "SDXL base"


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_damaged_safetensors_name_the_file(tiny_model, tmp_path, damage):
    path = tmp_path / "broken.safetensors"
    data = tiny_model.single_file.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"definitely not safetensors")
    with pytest.raises(ModelError, match="broken.safetensors"):
        check_sdxl_shape(detect_model_source(str(path)))


def test_sd15_diffusers_folder_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    (tmp_path / "unet" / "config.json").write_text('{"cross_attention_dim": 768}')
    with pytest.raises(ModelError, match="Stable Diffusion 1.x"):
        check_sdxl_shape(detect_model_source(str(tmp_path)))


# ---------------------------------------------------------------- load_sdxl

@pytest.fixture(scope="module")
def from_folder(tiny_model):
    return load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.diffusers_dir)))


def test_folder_and_single_file_load_the_same_model(tiny_model, from_folder):
    single = load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file),
                                    tokenizer_cache_dir=str(tiny_model.diffusers_dir)))
    for name in ("unet", "vae", "text_encoder1", "text_encoder2"):
        tensors = getattr(single, name).state_dict()
        assert _same(getattr(from_folder, name).state_dict(), tensors), name
        assert {t.dtype for t in tensors.values()} == {torch.float32}
        assert {t.device.type for t in tensors.values()} == {"cpu"}
    assert single.source.kind == "single_file" and from_folder.source.kind == "diffusers"
    assert single.tokenizer2.pad_token == "!" and single.tokenizer1.pad_token == "<|endoftext|>"
    assert type(single.noise_scheduler).__name__ == "DDPMScheduler"
    assert single.noise_scheduler.config.prediction_type == "epsilon"
    assert not single.noise_scheduler.config.clip_sample


def test_noise_scheduler_keeps_prediction_type_and_betas():
    scheduler = make_noise_scheduler({"prediction_type": "v_prediction", "beta_start": 0.00085, "beta_end": 0.012,
                                      "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
                                      "timestep_spacing": "trailing", "rescale_betas_zero_snr": True})
    assert scheduler.config.prediction_type == "v_prediction" and scheduler.config.rescale_betas_zero_snr
    plain = make_noise_scheduler({"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"})
    assert abs(float(plain.betas[0]) - 0.00085) < 1e-7 and abs(float(plain.betas[-1]) - 0.012) < 1e-7
    assert plain.config.prediction_type == "epsilon"


def test_single_file_from_fp16_is_loaded_as_float32(tiny_model, from_folder, tmp_path):
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() for k, v in load_file(tiny_model.single_file).items()}, str(half))
    loaded = load_sdxl(ModelSection(pretrained_model_name_or_path=str(half),
                                    tokenizer_cache_dir=str(tiny_model.diffusers_dir)))
    for name in ("unet", "text_encoder2"):
        ours = getattr(loaded, name).state_dict()
        assert {t.dtype for t in ours.values()} == {torch.float32}
        reference = getattr(from_folder, name).state_dict()
        assert all(torch.equal(ours[k], reference[k].half().float()) for k in ours)


def test_single_file_needs_configs_when_not_sdxl_base_size(tiny_model, tmp_path):
    tokenizers_only = tmp_path / "tokenizers"
    for sub in ("tokenizer", "tokenizer_2"):
        shutil.copytree(tiny_model.diffusers_dir / sub, tokenizers_only / sub)
    with pytest.raises(ModelError, match="configs cannot be assumed") as caught:
        load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file),
                               tokenizer_cache_dir=str(tokenizers_only)))
    assert "tokenizer_cache_dir" in caught.value.hint


def test_single_file_without_tokenizers_offline_says_what_to_do(tiny_model):
    with pytest.raises(ModelError, match="tokenizers") as caught:
        load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file)))
    assert "tokenizer_cache_dir" in caught.value.hint


def test_uncached_hub_id_offline_says_what_to_do():
    with pytest.raises(ModelError, match="not in the Hugging Face cache") as caught:
        load_sdxl(ModelSection(pretrained_model_name_or_path="nobody-here/no-such-sdxl-model"))
    assert "download" in caught.value.hint


def test_single_file_without_vae_needs_the_vae_option(tiny_model, from_folder, tmp_path):
    no_vae = tmp_path / "no_vae.safetensors"
    tensors = load_file(tiny_model.single_file)
    save_file({k: v for k, v in tensors.items() if not k.startswith("first_stage_model.")}, str(no_vae))
    with pytest.raises(ModelError, match="no VAE inside"):
        load_sdxl(ModelSection(pretrained_model_name_or_path=str(no_vae),
                               tokenizer_cache_dir=str(tiny_model.diffusers_dir)))
    loaded = load_sdxl(ModelSection(pretrained_model_name_or_path=str(no_vae), vae=str(tiny_model.single_file),
                                    tokenizer_cache_dir=str(tiny_model.diffusers_dir)))
    assert _same(loaded.vae.state_dict(), from_folder.vae.state_dict())


@pytest.mark.parametrize("layout", ["original", "diffusers", "folder"])
def test_separate_vae_in_every_form(tiny_model, from_folder, tmp_path, layout):
    base = detect_model_source(str(tiny_model.diffusers_dir))
    if layout == "folder":
        where = tiny_model.diffusers_dir / "vae"
    elif layout == "diffusers":
        where = tmp_path / "vae_diffusers.safetensors"
        shutil.copy(tiny_model.diffusers_dir / "vae" / "diffusion_pytorch_model.safetensors", where)
    else:  # an sdxl_vae.safetensors-style file: original names, no prefix
        where = tmp_path / "vae_original.safetensors"
        prefix = "first_stage_model."
        save_file({k[len(prefix):]: v for k, v in load_file(tiny_model.single_file).items()
                   if k.startswith(prefix)}, str(where))
    vae = load_vae(str(where), base=base)
    assert _same(vae.state_dict(), from_folder.vae.state_dict())


def test_folder_with_missing_tokenizer_files_is_an_error(tiny_model, tmp_path):
    # transformers 5 quietly builds an empty tokenizer from a folder without its files.
    copy = shutil.copytree(tiny_model.diffusers_dir, tmp_path / "model")
    for item in (copy / "tokenizer_2").iterdir():
        item.unlink()
    with pytest.raises(ModelError, match="no usable tokenizer"):
        load_sdxl(ModelSection(pretrained_model_name_or_path=str(copy)))


def test_hub_id_loads_from_the_hugging_face_cache_offline(tiny_model, from_folder, tmp_path, monkeypatch):
    # A Hub cache laid out as huggingface_hub writes it (refs/main -> snapshots/<commit>/...).
    repo = tmp_path / "hub" / "models--tiny-org--tiny-sdxl"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(tiny_model.diffusers_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    # The HF_HUB_CACHE variable, in this process: huggingface_hub reads it into `constants` at import, and
    # it, diffusers and transformers look the cache up there at each call (a fresh process costs ~12 s).
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    shape = check_sdxl_shape(detect_model_source("tiny-org/tiny-sdxl"))
    assert shape is not None and shape.cross_attention_dim == 80, shape
    model = load_sdxl(ModelSection(pretrained_model_name_or_path="tiny-org/tiny-sdxl"))
    assert model.source.kind == "hub" and model.tokenizer2.pad_token == "!"
    for name in ("unet", "vae", "text_encoder1", "text_encoder2"):
        assert _same(getattr(model, name).state_dict(), getattr(from_folder, name).state_dict()), name


def test_folder_with_only_fp16_variant_files_loads_as_float32(tiny_model, from_folder, tmp_path):
    copy = shutil.copytree(tiny_model.diffusers_dir, tmp_path / "model")
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({k: v.half() for k, v in load_file(weights).items()},
              str(copy / "unet" / "diffusion_pytorch_model.fp16.safetensors"))
    weights.unlink()
    loaded = load_sdxl(ModelSection(pretrained_model_name_or_path=str(copy)))
    reference = from_folder.unet.state_dict()
    for key, value in loaded.unet.state_dict().items():
        assert value.dtype == torch.float32 and torch.equal(value, reference[key].half().float()), key


def test_refiner_diffusers_folder_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(
        '{"cross_attention_dim": 1280, "addition_embed_type": "text_time"}')
    with pytest.raises(ModelError, match="refiner"):
        check_sdxl_shape(str(tmp_path))
