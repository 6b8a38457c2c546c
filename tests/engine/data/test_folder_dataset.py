"""Folder-style datasets (train_data_dir without a dataset TOML) as sd-scripts builds them:
`<repeats>_<class tokens>` subfolders, skipped folders named with the fix, reg folders, in_json;
the generated dataset TOML loads, and the plan's steps per epoch follow the repeats."""
from __future__ import annotations

import shutil

import pytest

from engine.config.schema import RunConfig
from engine.data.dataset_config import load_dataset_config
from engine.data.folder_dataset import (
    looks_like_folder_dataset,
    parse_subfolder_name,
    scan_folder_dataset,
    write_dataset_toml,
)
from engine.errors import ConfigError


def test_subfolder_names_as_sd_scripts_splits_them():
    assert parse_subfolder_name("20_ohwx woman") == (20, "ohwx woman")
    assert parse_subfolder_name("10_a_b") == (10, "a_b")  # only the first "_" separates
    assert parse_subfolder_name("3") == (3, "")
    assert parse_subfolder_name("cats") is None and parse_subfolder_name("x_10") is None


def _layout(root, demo_dataset, names):
    for name in names:
        shutil.copytree(demo_dataset.image_dir, root / name)
    return root


def test_subsets_repeats_tokens_and_skipped_folders(tmp_path, demo_dataset):
    train = _layout(tmp_path / "train", demo_dataset, ["3_ohwx shape", "1_extra", "0_off", "loose"])
    reg = _layout(tmp_path / "reg", demo_dataset, ["2_shape"])
    found = scan_folder_dataset(train, reg)
    got = [(s.image_dir.name, s.num_repeats, s.class_tokens, s.is_reg) for s in found.subsets]
    assert got == [("1_extra", 1, "extra", False), ("3_ohwx shape", 3, "ohwx shape", False),
                   ("2_shape", 2, "shape", True)]
    assert any("'0_off'" in w and "0 repeats" in w and "'1_off'" in w for w in found.warnings)
    assert any("'loose'" in w and "'10_loose'" in w for w in found.warnings)
    assert looks_like_folder_dataset(train) and not looks_like_folder_dataset(demo_dataset.image_dir)


def test_a_folder_of_images_is_named_with_the_fix(tmp_path, demo_dataset):
    with pytest.raises(ConfigError, match="holds images directly.*10_name"):
        scan_folder_dataset(demo_dataset.image_dir)
    with pytest.raises(ConfigError, match="reg_data_dir: folder not found"):
        scan_folder_dataset(_layout(tmp_path / "t", demo_dataset, ["1_a"]), tmp_path / "nope")


def test_in_json_is_the_fine_tuning_form(tmp_path, demo_dataset):
    meta = tmp_path / "meta.json"
    meta.write_text('{"00_red_circle": {"caption": "a red circle"}}')
    found = scan_folder_dataset(demo_dataset.image_dir, tmp_path, in_json=meta)
    (subset,) = found.subsets
    assert subset.metadata_file == meta.resolve() and subset.image_dir == demo_dataset.image_dir
    assert any("reg_data_dir is not used with in_json" in w for w in found.warnings)
    spec = load_dataset_config(write_dataset_toml(found, tmp_path / "ds.toml", {"resolution": 64}))
    assert spec.all_subsets()[0].metadata_file == meta.resolve()


def test_steps_per_epoch_follow_the_folder_repeats(tmp_path, tiny_model, demo_dataset):
    from engine.plan.run_plan import make_plan

    train = _layout(tmp_path / "train", demo_dataset, ["3_shape", "1_more"])
    general = {"resolution": 64, "enable_bucket": True, "min_bucket_reso": 32, "max_bucket_reso": 128,
               "bucket_reso_steps": 32, "caption_extension": ".txt"}
    toml = write_dataset_toml(scan_folder_dataset(train), tmp_path / "ds.toml", general)
    plan = make_plan(RunConfig().with_values(pretrained_model_name_or_path=str(tiny_model.single_file),
                                             dataset_config=str(toml), train_batch_size=1, max_train_steps=10),
                     base_dir=tmp_path)
    assert not plan.problems
    n = demo_dataset.num_images
    assert [(s.images, s.num_repeats) for s in plan.subsets] == [(n, 1), (n, 3)]
    assert plan.steps_per_epoch == n * 3 + n * 1  # batch 1: one step per image per repeat
    spec = load_dataset_config(toml)
    assert [s.class_tokens for s in spec.all_subsets()] == ["more", "shape"]


def test_args_toml_with_in_json_trains_from_the_metadata(tmp_path, demo_dataset):
    from engine.interop.kohya_import import import_kohya

    meta = tmp_path / "meta.json"
    meta.write_text('{"00_red_circle": {"caption": "a red circle"}}')
    args = tmp_path / "args.toml"
    args.write_text(f'train_data_dir = "{demo_dataset.image_dir.as_posix()}"\nin_json = "meta.json"\n'
                    'resolution = 64\n')
    result = import_kohya(args, merged_dataset_path=tmp_path / "run.dataset.toml")
    (subset,) = load_dataset_config(result.config.dataset.dataset_config).all_subsets()
    assert subset.metadata_file == meta.resolve() and subset.image_dir == demo_dataset.image_dir
    assert any("captions from" in m for m in result.messages)
