"""export-kohya writes SDXL's tokenizers where sd-scripts looks for them offline
(`tokenizer_cache_dir`/openai_clip-vit-large-patch14 and .../laion_CLIP-ViT-bigG-14-laion2B-39B-b160k),
and sdxl-tui reads that layout back (engine/interop/kohya_tokenizers.py)."""
from __future__ import annotations

from transformers import CLIPTokenizer

from engine.config.schema import RunConfig
from engine.interop.kohya_export import export_kohya
from engine.model.clip_tokenizer import sdxl_tokenizers
from engine.model.tokenizer_source import SD_SCRIPTS_TOKENIZER_DIRS, find_tokenizers, load_tokenizers

CAPTIONS = ["a photo of a cat, (masterpiece:1.2)", "東京 café  \t odd   spacing", " ".join(["long"] * 100)]


def _ids(tokenizer, caption):
    return tokenizer(caption, padding="max_length", max_length=77, truncation=True).input_ids


def test_export_writes_the_tokenizers_sd_scripts_reads(tmp_path):
    result = export_kohya(RunConfig(), tmp_path / "export")
    folder = tmp_path / "export" / "tokenizer_cache"
    assert f'tokenizer_cache_dir = "{folder}"' in result.args_path.read_text()
    assert any("needs no network" in note for note in result.notes)
    # as sd-scripts loads them: CLIPTokenizer.from_pretrained(<dir>/<hub id with / -> _>)
    theirs = [CLIPTokenizer.from_pretrained(str(folder / name)) for name in SD_SCRIPTS_TOKENIZER_DIRS]
    ours = sdxl_tokenizers()
    for mine, exported in zip(ours, theirs):
        assert exported.model_max_length == 77 and exported.pad_token == mine.pad_token
        for caption in CAPTIONS:
            assert _ids(exported, caption) == _ids(mine, caption)
    # and sdxl-tui reads the same folder back as sd-scripts' layout
    source = find_tokenizers(str(folder), (10, 10))
    assert source.kind == "sd-scripts"
    first, second = load_tokenizers(source)
    assert second.pad_token_id == 0 and _ids(first, CAPTIONS[0]) == _ids(ours[0], CAPTIONS[0])


def test_a_diffusers_tokenizer_folder_is_copied_into_sd_scripts_layout(tmp_path, tiny_model):
    result = export_kohya(RunConfig().with_values(tokenizer_cache_dir=str(tiny_model.diffusers_dir)), tmp_path / "k")
    folder = tmp_path / "k" / "tokenizer_cache"
    assert any("copied" in note for note in result.notes)
    copied = CLIPTokenizer.from_pretrained(str(folder / SD_SCRIPTS_TOKENIZER_DIRS[1]))
    original = CLIPTokenizer.from_pretrained(str(tiny_model.diffusers_dir), subfolder="tokenizer_2")
    assert _ids(copied, "a red circle") == _ids(original, "a red circle")
