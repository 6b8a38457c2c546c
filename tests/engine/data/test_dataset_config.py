"""sd-scripts dataset TOML/JSON: precedence, origins, errors that point at the line."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from engine.data.dataset_config import load_dataset_config
from engine.errors import ConfigError

LAYERED = """\
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1
enable_bucket = true
max_bucket_reso = 2048

[[datasets]]
resolution = [832, 1216]
batch_size = 4
keep_tokens = 2
flip_aug = true

  [[datasets.subsets]]
  image_dir = "a"
  num_repeats = 10
  keep_tokens = 3

  [[datasets.subsets]]
  image_dir = "b"
  is_reg = true

[[datasets]]
resolution = 1024

  [[datasets.subsets]]
  image_dir = "c"
"""


def write(tmp_path: Path, text: str, name: str = "dataset.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir(exist_ok=True)
    return path


def test_values_resolve_subset_dataset_general_run_default(tmp_path):
    cfg = load_dataset_config(write(tmp_path, LAYERED), default_batch_size=2)
    a, b, c = cfg.all_subsets()
    assert (a.keep_tokens, a.origin("keep_tokens")) == (3, "subset")
    assert (b.keep_tokens, b.origin("keep_tokens")) == (2, "dataset")
    assert (c.keep_tokens, c.origin("keep_tokens")) == (1, "general")
    assert (c.flip_aug, c.origin("flip_aug")) == (False, "default")
    assert (a.flip_aug, a.origin("flip_aug")) == (True, "dataset")
    assert (a.shuffle_caption, a.origin("shuffle_caption")) == (True, "general")
    assert (a.num_repeats, b.num_repeats) == (10, 1)
    assert a.caption_extension == ".txt" and a.is_reg is False and b.is_reg is True
    d0, d1 = cfg.datasets
    assert (d0.batch_size, d0.origin("batch_size")) == (4, "dataset")
    assert (d1.batch_size, d1.origin("batch_size")) == (2, "run config")
    assert d0.resolution == (832, 1216) and d1.resolution == (1024, 1024)
    assert (d1.enable_bucket, d1.origin("enable_bucket")) == (True, "general")
    assert d1.bucket_reso_steps == 64 and d1.min_bucket_reso == 256 and d1.max_bucket_reso == 2048
    assert [s.index for s in cfg.all_subsets()] == [0, 1, 2]
    assert [s.dataset_index for s in cfg.all_subsets()] == [0, 0, 1]


def test_defaults_match_sd_scripts(tmp_path):
    path = write(tmp_path, '[[datasets]]\nresolution = 1024\n[[datasets.subsets]]\nimage_dir = "a"\n')
    cfg = load_dataset_config(path)
    (s,) = cfg.all_subsets()
    d = cfg.datasets[0]
    assert s.caption_extension == ".caption"
    assert (s.caption_separator, s.keep_tokens, s.num_repeats, s.token_warmup_min) == (",", 0, 1, 1)
    assert (d.batch_size, d.origin("batch_size")) == (1, "default")
    assert d.enable_bucket is False and d.bucket_no_upscale is False and d.network_multiplier == 1.0
    assert s.class_tokens is None and s.caption_prefix is None


def test_caption_extension_gets_its_dot_like_sd_scripts(tmp_path):
    path = write(tmp_path, '[[datasets]]\nresolution = 1024\n[[datasets.subsets]]\nimage_dir = "a"\n'
                           'caption_extension = "txt"\n')
    assert load_dataset_config(path).all_subsets()[0].caption_extension == ".txt"
    with pytest.raises(ConfigError, match="file extension"):
        load_dataset_config(write(tmp_path, path.read_text().replace('"txt"', '""')))


def test_image_dir_is_relative_to_the_toml_folder(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    cfg = load_dataset_config(write(tmp_path, LAYERED))
    assert cfg.all_subsets()[0].image_dir == tmp_path.resolve() / "a"
    assert not cfg.notes


def test_image_dir_falls_back_to_cwd_like_sd_scripts(tmp_path, monkeypatch):
    (tmp_path / "work" / "imgs").mkdir(parents=True)
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "d.toml"
    path.write_text('[[datasets]]\nresolution = 1024\n[[datasets.subsets]]\nimage_dir = "imgs"\n')
    monkeypatch.chdir(tmp_path / "work")
    cfg = load_dataset_config(path)
    assert cfg.all_subsets()[0].image_dir == (tmp_path / "work" / "imgs")
    assert "current directory" in cfg.notes[0]


def test_unknown_key_names_key_line_and_suggestion(tmp_path):
    text = LAYERED.replace('  image_dir = "c"', '  image_dir = "c"\n  shuffle_captions = true')
    with pytest.raises(ConfigError) as info:
        load_dataset_config(write(tmp_path, text))
    err = info.value
    assert err.key == "shuffle_captions"
    assert err.line == text.splitlines().index("  shuffle_captions = true") + 1
    assert "did you mean 'shuffle_caption'" in str(err)
    assert "datasets[1].subsets[0]" in str(err)


def test_same_key_in_an_earlier_scope_does_not_confuse_the_line(tmp_path):
    # num_repeats is valid in subset 0; the bad value is in subset 1, whose line must be named
    text = LAYERED.replace('  is_reg = true', '  is_reg = true\n  num_repeats = "many"')
    with pytest.raises(ConfigError) as info:
        load_dataset_config(write(tmp_path, text))
    assert info.value.line == text.splitlines().index('  num_repeats = "many"') + 1
    assert "datasets[0].subsets[1].num_repeats" in str(info.value)
    assert "integer" in str(info.value)


def test_dataset_level_key_in_a_subset_is_explained(tmp_path):
    text = LAYERED.replace('  image_dir = "c"', '  image_dir = "c"\n  batch_size = 2')
    with pytest.raises(ConfigError, match="dataset-level key"):
        load_dataset_config(write(tmp_path, text))


@pytest.mark.parametrize("line, expected", [
    ("resolution = 1000", "divisible by 32"),
    ("resolution = [1024]", "integer or \\[width, height\\]"),
    ("bucket_reso_steps = 48", "multiple of 32"),
    ("caption_dropout_rate = 1.5", "from 0.0 to 1.0"),
    ("flip_aug = 1", "true or false"),
    ("enable_wildcard = 1", "true or false"),
])
def test_wrong_values_say_what_was_expected(tmp_path, line, expected):
    text = f'[[datasets]]\n{line}\n' + ('resolution = 1024\n' if "resolution" not in line else '')
    text += '[[datasets.subsets]]\nimage_dir = "a"\n'
    with pytest.raises(ConfigError, match=expected) as info:
        load_dataset_config(write(tmp_path, text))
    assert info.value.line == 2


def test_bucket_reso_steps_32_is_fine_for_sdxl(tmp_path):
    text = '[general]\nbucket_reso_steps = 32\nenable_bucket = true\n[[datasets]]\nresolution = 1024\n'
    text += '[[datasets.subsets]]\nimage_dir = "a"\n'
    assert load_dataset_config(write(tmp_path, text)).datasets[0].bucket_reso_steps == 32


def test_missing_resolution_and_subsets(tmp_path):
    with pytest.raises(ConfigError, match="no resolution"):
        load_dataset_config(write(tmp_path, '[[datasets]]\n[[datasets.subsets]]\nimage_dir = "a"\n'))
    with pytest.raises(ConfigError, match="no \\[\\[datasets.subsets\\]\\]"):
        load_dataset_config(write(tmp_path, '[[datasets]]\nresolution = 1024\n'))
    with pytest.raises(ConfigError, match="no \\[\\[datasets\\]\\]"):
        load_dataset_config(write(tmp_path, '[general]\nresolution = 1024\n'))


def test_mixing_caption_files_and_metadata_in_one_dataset_is_an_error(tmp_path):
    text = ('[[datasets]]\nresolution = 1024\n[[datasets.subsets]]\nimage_dir = "a"\n'
            '[[datasets.subsets]]\nmetadata_file = "meta.json"\n')
    with pytest.raises(ConfigError, match="mixes"):
        load_dataset_config(write(tmp_path, text))


def test_malformed_toml_gives_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_dataset_config(write(tmp_path, '[[datasets]]\nresolution = = 3\n'))
    assert info.value.line == 2


def test_json_of_the_same_shape(tmp_path):
    data = {"general": {"shuffle_caption": True},
            "datasets": [{"resolution": [1024, 1024], "subsets": [{"image_dir": "a", "num_repeats": 2}]}]}
    path = write(tmp_path, json.dumps(data, indent=2), "dataset.json")
    (s,) = load_dataset_config(path).all_subsets()
    assert s.shuffle_caption and s.origin("shuffle_caption") == "general" and s.num_repeats == 2
    data["datasets"][0]["subsets"][0]["colour_aug"] = True
    path = write(tmp_path, json.dumps(data, indent=2), "dataset.json")
    with pytest.raises(ConfigError, match="did you mean 'color_aug'") as info:
        load_dataset_config(path)
    assert info.value.line == next(n for n, line in enumerate(json.dumps(data, indent=2).splitlines(), 1)
                                   if "colour_aug" in line)


def test_specs_are_frozen(tmp_path):
    cfg = load_dataset_config(write(tmp_path, LAYERED))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.all_subsets()[0].num_repeats = 3  # type: ignore[misc]


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_dataset_config(tmp_path / "nope.toml")
