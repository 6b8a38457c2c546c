"""sd-scripts' validation options (issue 14) through every import and export: the args TOML and
the command line map them 1:1 (validation_split / validation_seed go to the dataset TOML's
[general]), kohya_ss' GUI has no widget for them so they travel in additional_parameters, and
the rules warn when they are set without held-out images."""
from __future__ import annotations

import json

import pytest
import tomllib

from engine.config.rules import WARNING, check_rules
from engine.config.schema import RunConfig
from engine.data.dataset_config import load_dataset_config
from engine.errors import ConfigError
from engine.interop.kohya_export import build_args_document, command_line
from engine.interop.kohya_gui_export import gui_document
from engine.interop.kohya_gui_import import convert_kohya_gui
from engine.interop.kohya_import import convert_kohya_args

BASE = {"pretrained_model_name_or_path": "m", "dataset_config": "d.toml", "max_train_steps": 10}
OPTIONS = {"validate_every_n_steps": 50, "validate_every_n_epochs": 2, "max_validation_steps": 3}
GUI = {"LoRA_type": "Standard", "sdxl": True, "optimizer": "AdamW", "learning_rate": 1e-4, "unet_lr": 1e-4,
       "text_encoder_lr": 5e-5, "max_resolution": "64,64", "epoch": 2, "max_train_steps": 0,
       "train_batch_size": 1, "network_dim": 4, "network_alpha": 2, "mixed_precision": "no",
       "noise_offset_type": "Original"}


def test_args_toml_maps_them_and_the_split_goes_to_the_dataset():
    result = convert_kohya_args({**BASE, **OPTIONS, "validation_split": 0.1, "validation_seed": 3})
    notes = {n.key: n for n in result.notes}
    assert all(notes[key].status == "mapped" for key in OPTIONS)
    assert {key: getattr(result.config.logging, key) for key in OPTIONS} == OPTIONS
    assert result.dataset_defaults["validation_split"] == 0.1 and result.dataset_defaults["validation_seed"] == 3


def test_export_writes_them_back_in_sd_scripts_form():
    cfg = RunConfig().with_values(**BASE, **OPTIONS)
    doc = tomllib.loads(__import__("tomlkit").dumps(build_args_document(cfg, None, [])))
    flat = {k: v for table in doc.values() if isinstance(table, dict) for k, v in table.items()}
    assert {key: flat[key] for key in OPTIONS} == OPTIONS
    assert "sdxl_tui" not in doc or not set(OPTIONS) & set(doc["sdxl_tui"])  # sd-scripts' own options
    line = command_line(cfg)
    assert all(f"--{key}={value}" in line for key, value in OPTIONS.items())
    assert "validate_every_n_steps" not in command_line(RunConfig().with_values(**BASE))  # unset: left out


def test_kohya_gui_carries_them_in_additional_parameters(tmp_path):
    cfg = RunConfig().with_values(**BASE, **OPTIONS)
    doc = gui_document(cfg, None, tmp_path)
    assert "--validate_every_n_steps=50 --validate_every_n_epochs=2 --max_validation_steps=3" \
        in doc["additional_parameters"]
    back = convert_kohya_gui({**GUI, "additional_parameters": doc["additional_parameters"]})[0].config
    assert {key: getattr(back.logging, key) for key in OPTIONS} == OPTIONS
    # kohya_ss' LoRA tab has no such key: one written into the JSON itself is not passed by kohya_ss
    with pytest.raises(ConfigError, match="validate_every_n_steps"):
        convert_kohya_gui({**GUI, "validate_every_n_steps": 50})


def test_schema_bounds():
    with pytest.raises(ValueError):
        RunConfig().with_values(max_validation_steps=0)


def test_options_without_held_out_images_warn_naming_option_and_fix(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    (tmp_path / "d.toml").write_text(
        f'[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = {json.dumps(str(images))}\n')
    dataset = load_dataset_config(tmp_path / "d.toml")
    cfg = RunConfig().with_values(**BASE, validate_every_n_steps=50)
    issues = [i for i in check_rules(cfg, dataset) if "validate_every_n_steps" in i.keys]
    assert len(issues) == 1 and issues[0].level == WARNING and "validation_split" in issues[0].message
    (tmp_path / "d.toml").write_text("[general]\nvalidation_split = 0.2\n" + (tmp_path / "d.toml").read_text())
    assert not [i for i in check_rules(cfg, load_dataset_config(tmp_path / "d.toml"))
                if "validate_every_n_steps" in i.keys]
