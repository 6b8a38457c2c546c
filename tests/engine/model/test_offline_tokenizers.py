"""Single files load with no network and no tokenizer folder (engine/model/clip_tokenizer.py,
engine/model/tokenizer_source.py): SDXL's tokenizers from the packaged CLIP BPE vocabulary give
open_clip's own ids; tokenizer_cache_dir takes diffusers' and sd-scripts' layouts."""
from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path

import pytest
import torch

from engine.config.schema import ModelSection
from engine.errors import ModelError
from engine.model.clip_tokenizer import CLIP_VOCAB_SIZE, sdxl_tokenizers
from engine.model.load import load_sdxl
from engine.model.tokenizer_source import SD_SCRIPTS_TOKENIZER_DIRS, find_tokenizers

CAPTIONS = [
    "a photo of a cat",
    "café naïve Zoë — 東京タワー 🎨 ©, 1girl, 2024年",  # unicode
    "(masterpiece:1.2), [blurry], {best quality}, <lora:style:0.7>, ((red hat))",  # weighted
    "  lots \t of\n\n odd\u00a0white\u2003space\r\n  ",  # unusual whitespace
    " ".join(f"word{i}" for i in range(120)),  # long: truncated to 77 with the end token last
    "don't it's we'll I'M SHOUTING",
    "e\u0301 ﬁne ＡＢＣ full-width",  # combining mark, ligature, full-width letters
    "",
]


@pytest.fixture(scope="module")
def tokenizers():
    return sdxl_tokenizers()


@pytest.fixture(scope="module")
def open_clip_tokenizer():
    """open_clip's SimpleTokenizer, loaded from its file: open_clip's package __init__ imports
    torchvision, which this project never installs (`pip install --no-deps open-clip-torch`)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open_clip is not installed: pip install --no-deps open-clip-torch ftfy (make install does)")
    path = Path(spec.submodule_search_locations[0]) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer_reference", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def _ids(tokenizer, caption: str) -> list[int]:
    return tokenizer(caption, padding="max_length", max_length=77, truncation=True).input_ids


@pytest.mark.parametrize("caption", CAPTIONS)
def test_token_ids_equal_open_clips(tokenizers, open_clip_tokenizer, caption):
    reference = open_clip_tokenizer([caption])[0].tolist()  # pads with 0, as SDXL's encoder 2
    first, second = tokenizers
    assert _ids(second, caption) == reference
    end = reference.index(49407)
    ids1 = _ids(first, caption)  # encoder 1 pads with its end token instead
    assert ids1[:end + 1] == reference[:end + 1] and set(ids1[end:]) == {49407}


def test_the_two_tokenizers_pad_as_sdxl(tokenizers):
    first, second = tokenizers
    assert len(first) == len(second) == CLIP_VOCAB_SIZE
    assert (first.pad_token, first.pad_token_id, first.eos_token_id) == ("<|endoftext|>", 49407, 49407)
    assert (second.pad_token, second.pad_token_id, second.bos_token_id) == ("!", 0, 49406)
    long = _ids(first, " ".join(["cat"] * 200))
    assert len(long) == 77 and long[0] == 49406 and long[-1] == 49407


@pytest.fixture(scope="module")
def clip_vocab_single_file(tmp_path_factory):
    """(file, configs folder): a tiny SDXL-shaped single file whose text encoders have CLIP's
    49408-token embedding, and a folder with its model configs only (no tokenizers): the real
    SDXL base's configs are built in, the tiny model's are not."""
    from engine.demo.tiny_model import make_tiny_modules
    from engine.model.single_file import diffusers_to_single_file
    from engine.storage.atomic import atomic_save_safetensors

    models = make_tiny_modules(seed=3, vocab_size=CLIP_VOCAB_SIZE)
    tensors = diffusers_to_single_file(models.unet.state_dict(), dict(models.unet.config), models.vae.state_dict(),
                                       models.text_encoder1.state_dict(), models.text_encoder2.state_dict())
    folder = tmp_path_factory.mktemp("clip_vocab")
    configs = folder / "configs"
    models.unet.save_config(configs / "unet")
    models.vae.save_config(configs / "vae")
    models.text_encoder1.config.save_pretrained(configs / "text_encoder")
    models.text_encoder2.config.save_pretrained(configs / "text_encoder_2")
    return atomic_save_safetensors(folder / "model.safetensors", tensors), configs


@pytest.fixture()
def no_network(monkeypatch):
    """Every connection attempt fails, as on a machine with no route out; counts the tries."""
    tries: list = []

    def refuse(self, address, *args):
        tries.append(address)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tries


def test_single_file_loads_with_no_network_and_no_tokenizer_folder(clip_vocab_single_file, no_network):
    path, configs = clip_vocab_single_file
    model = load_sdxl(ModelSection(pretrained_model_name_or_path=str(path), tokenizer_cache_dir=str(configs)))
    assert no_network == []  # nothing even tried the network
    ids = _ids(model.tokenizer2, "a red circle")
    assert ids[:6] == [49406, 320, 736, 7117, 49407, 0]
    hidden = model.text_encoder2(torch.tensor([ids]), output_hidden_states=True).hidden_states[-2]
    assert hidden.shape[:2] == (1, 77) and torch.isfinite(hidden).all()


def test_single_file_with_another_vocab_and_no_tokenizers_names_the_option(tiny_model, no_network):
    with pytest.raises(ModelError, match="not CLIP's 49408") as caught:
        load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file)))
    assert "tokenizer_cache_dir" in caught.value.hint and no_network == []


def test_tokenizer_cache_dir_in_sd_scripts_layout(tiny_model, tmp_path, no_network):
    cache = tmp_path / "tokenizer_cache"
    shutil.copytree(tiny_model.diffusers_dir / "tokenizer", cache / SD_SCRIPTS_TOKENIZER_DIRS[0])
    shutil.copytree(tiny_model.diffusers_dir / "tokenizer", cache / SD_SCRIPTS_TOKENIZER_DIRS[1])  # pads with EOS
    source = find_tokenizers(str(cache), (10, 10))
    assert source.kind == "sd-scripts" and "sd-scripts layout" in source.description
    # the tiny model's configs come from its folder; the tokenizers from the sd-scripts cache
    configs = tmp_path / "configs"
    shutil.copytree(tiny_model.diffusers_dir, configs, ignore=shutil.ignore_patterns("tokenizer*"))
    shutil.copytree(cache / SD_SCRIPTS_TOKENIZER_DIRS[0], configs / SD_SCRIPTS_TOKENIZER_DIRS[0])
    shutil.copytree(cache / SD_SCRIPTS_TOKENIZER_DIRS[1], configs / SD_SCRIPTS_TOKENIZER_DIRS[1])
    model = load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file),
                                   tokenizer_cache_dir=str(configs)))
    reference = load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.diffusers_dir)))
    caption = "a red circle"
    assert _ids(model.tokenizer1, caption) == _ids(reference.tokenizer1, caption)
    assert _ids(model.tokenizer2, caption) == _ids(reference.tokenizer2, caption)  # `!` padding, as sd-scripts
    assert model.tokenizer2.pad_token_id == 0 and no_network == []


def test_tokenizer_source_prefers_the_diffusers_layout_then_built_in(tiny_model, tmp_path):
    assert find_tokenizers(str(tiny_model.diffusers_dir), (10, 10)).kind == "diffusers"
    empty = tmp_path / "empty"
    empty.mkdir()
    built_in = find_tokenizers(str(empty), (CLIP_VOCAB_SIZE, CLIP_VOCAB_SIZE))
    assert built_in.kind == "built-in" and "no download" in built_in.description
