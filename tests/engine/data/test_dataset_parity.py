"""sd-scripts dataset keys of issue 12: validation_split / validation_seed, resize_interpolation per
subset, custom_attributes, conditioning_data_dir, network_multiplier, alpha_mask, enable_wildcard
caption files, cache_info; and color_aug's gamma on 0..255 values."""
from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config.rules import ERROR, check_rules
from engine.config.schema import RunConfig
from engine.data.dataset_config import load_dataset_config
from engine.data.images import color_augment
from engine.data.scan import scan_dataset
from engine.data.validation_split import split_for_validation

BASE = RunConfig().with_values(pretrained_model_name_or_path="m", dataset_config="d.toml")


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 10 % 255, 0, 0)).save(folder / f"img{i:02d}.png")


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "dataset.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_split_formula_is_sd_scripts():
    entries = [f"p{i}" for i in range(10)]
    kept, held = split_for_validation(entries, 0.25, 7)
    shuffled = list(entries)
    random.Random(7).shuffle(shuffled)
    assert kept == shuffled[:math.ceil(10 * 0.75)] and held == shuffled[8:]
    assert split_for_validation(entries, 0.0, 7) == (entries, [])


def test_validation_split_holds_images_out_of_training_but_not_reg(tmp_path):
    _images(tmp_path / "train", 10)
    _images(tmp_path / "reg", 4)
    path = _toml(tmp_path, '[[datasets]]\nresolution = 64\nvalidation_split = 0.3\nvalidation_seed = 1\n'
                           '[[datasets.subsets]]\nimage_dir = "train"\n'
                           '[[datasets.subsets]]\nimage_dir = "reg"\nis_reg = true\n')
    scanned = scan_dataset(load_dataset_config(path))
    trained = {i.path.name for i in scanned.items if not i.is_reg}
    assert len(trained) == 7 and len(scanned.held_out) == 3
    assert not trained & {p.name for p in scanned.held_out}
    assert sum(i.is_reg for i in scanned.items) == 4  # regularisation images are never split
    # the validation loss's data: the held-out images, bucketed, each once (sd-scripts' validation dataset)
    held = scanned.validation_set()
    assert [i.path for i in held.items] == list(scanned.held_out) and {i.num_repeats for i in held.items} == {1}
    assert not any(i.is_reg for i in held.items) and held.num_train_images == 3
    again = scan_dataset(load_dataset_config(path), seed=99)  # validation_seed wins over the run seed
    assert again.held_out == scanned.held_out
    # without validation_seed the run's seed picks the held-out images
    path.write_text(path.read_text().replace("validation_seed = 1\n", ""))
    by_seed = {tuple(scan_dataset(load_dataset_config(path), seed=s).held_out) for s in range(6)}
    assert len(by_seed) > 1


def test_validation_split_of_one_is_refused(tmp_path):
    from engine.errors import ConfigError

    _images(tmp_path / "train", 2)
    path = _toml(tmp_path, '[[datasets]]\nresolution = 64\nvalidation_split = 1.0\n'
                           '[[datasets.subsets]]\nimage_dir = "train"\n')
    with pytest.raises(ConfigError, match="validation_split"):
        load_dataset_config(path)


def test_subset_resize_interpolation_wins_and_new_keys_parse(tmp_path):
    _images(tmp_path / "a", 1)
    path = _toml(tmp_path, '[[datasets]]\nresolution = 64\nresize_interpolation = "bicubic"\ncache_info = true\n'
                           '[[datasets.subsets]]\nimage_dir = "a"\nresize_interpolation = "nearest"\n'
                           'custom_attributes = { note = "x" }\n'
                           '[[datasets.subsets]]\nimage_dir = "a"\n')
    config = load_dataset_config(path)
    first, second = config.all_subsets()
    assert first.resize_interpolation == "nearest" and second.resize_interpolation == "bicubic"
    assert first.custom_attributes == {"note": "x"} and first.cache_info
    assert not [i for i in check_rules(BASE, config) if i.level == ERROR]


@pytest.mark.parametrize("dataset_line, subset_line, key", [
    ("network_multiplier = 0.5", "", "network_multiplier"),
    ("", "alpha_mask = true", "alpha_mask"),
    ("", 'conditioning_data_dir = "masks"', "conditioning_data_dir"),
    ("", "custom_attributes = { diff_output_preservation = true }", "custom_attributes"),
])
def test_unsupported_dataset_keys_are_refused_by_the_rules(tmp_path, dataset_line, subset_line, key):
    _images(tmp_path / "a", 1)
    path = _toml(tmp_path, f'[[datasets]]\nresolution = 64\n{dataset_line}\n'
                           f'[[datasets.subsets]]\nimage_dir = "a"\n{subset_line}\n')
    issues = [i for i in check_rules(BASE, load_dataset_config(path)) if i.level == ERROR]
    assert [i.keys for i in issues] == [(key,)] and key in issues[0].message


def test_wildcard_subsets_read_every_caption_line(tmp_path):
    _images(tmp_path / "a", 1)
    (tmp_path / "a" / "img00.caption").write_text("one {x|y}\n\n two \n", encoding="utf-8")
    path = _toml(tmp_path, '[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "a"\n'
                           'enable_wildcard = true\n')
    assert scan_dataset(load_dataset_config(path)).items[0].caption == "one {x|y}\ntwo"
    path.write_text(path.read_text().replace("enable_wildcard = true", ""))
    assert scan_dataset(load_dataset_config(path)).items[0].caption == "one {x|y}"


class _FixedRng(random.Random):
    def __init__(self, values):
        super().__init__(0)
        self.values = list(values)

    def random(self):
        return self.values.pop(0)

    def uniform(self, a, b):
        return self.values.pop(0)


def test_color_aug_gamma_is_applied_to_0_255_values_like_sd_scripts():
    array = np.array([[[200, 100, 0]]], dtype=np.uint8)
    brighter = color_augment(array, _FixedRng([0.1, 0.2, 1.05]))  # applied, gamma branch, gamma 1.05
    assert brighter.tolist() == [[[255, int(100 ** 1.05), 0]]]
    darker = color_augment(array, _FixedRng([0.1, 0.2, 0.95]))
    assert darker.tolist() == [[[int(200 ** 0.95), int(100 ** 0.95), 0]]]
    assert color_augment(array, _FixedRng([0.9])) is array  # probability 0.33
