"""Scanning real files: images, captions, broken files; loading images at their bucket size."""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.dataset_config import load_dataset_config
from engine.data.images import hue_shift, load_training_image
from engine.data.scan import scan_dataset
from engine.errors import DataError


def png(path: Path, size=(64, 48), color=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def gradient_png(path: Path, size=(96, 64)) -> Path:
    w, h = size
    xs = np.tile(np.arange(w, dtype=np.uint8)[None, :], (h, 1))
    ys = np.tile(np.arange(h, dtype=np.uint8)[:, None], (1, w))
    Image.fromarray(np.stack([xs, ys, np.full_like(xs, 128)], axis=2), "RGB").save(path)
    return path


def config(tmp_path: Path, subsets: str, dataset: str = "resolution = 64\n", general: str = "") -> Path:
    path = tmp_path / "dataset.toml"
    path.write_text(f"[general]\n{general}\n[[datasets]]\n{dataset}\n{subsets}", encoding="utf-8")
    return path


def subset(image_dir: str, extra: str = "") -> str:
    return f'[[datasets.subsets]]\nimage_dir = "{image_dir}"\n{extra}\n'


def scan(path: Path, **kw):
    return scan_dataset(load_dataset_config(path), **kw)


def test_finds_images_sizes_and_first_caption_line(tmp_path):
    png(tmp_path / "img" / "a.png", (64, 48))
    png(tmp_path / "img" / "b.JPG", (48, 64))
    (tmp_path / "img" / "a.caption").write_text("a red square\nignored second line\n", encoding="utf-8")
    (tmp_path / "img" / "b.caption").write_bytes("\ufeffa café photo".encode("utf-8"))  # BOM is fine
    (tmp_path / "img" / "notes.md").write_text("not an image")
    result = scan(config(tmp_path, subset("img", "num_repeats = 3")))
    assert [(i.path.name, i.size, i.caption) for i in result.items] == [
        ("a.png", (64, 48), "a red square"), ("b.JPG", (48, 64), "a café photo")]
    assert all(i.num_repeats == 3 and i.bucket == (64, 64) and not i.is_reg for i in result.items)
    assert result.problems == ()
    assert len(result.warnings) == 1 and "subset 0: 1 caption file(s) have more than one line" in result.warnings[0]
    assert result.subsets[0].images == 2


def test_missing_caption_uses_class_tokens_with_warning(tmp_path):
    png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "b.png")
    (tmp_path / "img" / "b.caption").write_text("   \n")
    (tmp_path / "img" / "ghost.caption").write_text("no image for me")
    result = scan(config(tmp_path, subset("img", 'class_tokens = "sks dog"')))
    assert [i.caption for i in result.items] == ["sks dog", "sks dog"]
    text = "\n".join(result.warnings)
    assert "a.png: no caption file a.caption" in text and "b.caption: caption is blank" in text
    assert "ghost.caption: caption file without a matching image" in text
    s = result.subsets[0]
    assert (s.missing_captions, s.empty_captions, s.orphan_captions) == (1, 1, 1)


def test_non_utf8_caption_is_a_data_error_naming_the_file(tmp_path):
    png(tmp_path / "img" / "a.png")
    (tmp_path / "img" / "a.caption").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"a\.caption: caption file is not UTF-8 text: byte 0xe9 at offset 3"):
        scan(config(tmp_path, subset("img")))


def test_truncated_png_is_named_or_skipped(tmp_path):
    png(tmp_path / "img" / "good.png")
    bad = png(tmp_path / "img" / "bad.png", (64, 64))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    path = config(tmp_path, subset("img"))
    with pytest.raises(DataError, match=r"bad\.png: unreadable image") as info:
        scan(path)
    assert info.value.exit_code == 65
    result = scan(path, skip_bad_images=True)
    assert [i.path.name for i in result.items] == ["good.png"]
    assert result.skipped == 1 and any("bad.png" in w for w in result.warnings)
    assert result.subsets[0].unreadable == 1


def test_truncated_jpeg_and_garbage_file(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(folder / "cut.jpg", quality=90)
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[:-50])
    (folder / "junk.webp").write_bytes(b"definitely not an image")
    result = scan(config(tmp_path, subset("img")), strict=False)
    assert len(result.problems) == 2 + 0 and result.items == ()
    assert any("cut.jpg: JPEG is truncated" in p for p in result.problems)
    assert any("junk.webp: unreadable image" in p for p in result.problems)


def test_empty_and_missing_folders_are_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        scan(config(tmp_path, subset("empty")))
    with pytest.raises(DataError, match="image folder not found"):
        scan(config(tmp_path, subset("nowhere")))


def test_small_image_warning_and_buckets(tmp_path):
    png(tmp_path / "img" / "tiny.png", (100, 100))
    png(tmp_path / "img" / "wide.png", (1500, 1000))
    path = config(tmp_path, subset("img"), dataset="resolution = 1024\nenable_bucket = true\nmax_bucket_reso = 2048\n")
    result = scan(path)
    by_name = {i.path.name: i for i in result.items}
    assert by_name["wide.png"].bucket == (1216, 832)
    assert by_name["tiny.png"].bucket == (1024, 1024)
    assert any("tiny.png: 100x100 is enlarged 10.2x" in w for w in result.warnings)
    assert not any("wide.png" in w and "enlarged" in w for w in result.warnings)


def test_exif_rotation_gives_upright_size(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("RGB", (80, 40)).save(folder / "phone.jpg", exif=exif)
    (item,) = scan(config(tmp_path, subset("img"))).items
    assert item.size == (40, 80)
    loaded = load_training_image(item.path, (64, 64), rng=random.Random(0))
    assert loaded.geometry.original == (40, 80)


def test_regularisation_images_are_balanced_to_training_count(tmp_path):
    for n in range(3):
        png(tmp_path / "train" / f"t{n}.png")
    for n in range(2):
        png(tmp_path / "reg" / f"r{n}.png")
    path = config(tmp_path, subset("train", "num_repeats = 4") + subset("reg", "is_reg = true"))
    result = scan(path)
    assert result.num_train_images == 12 and result.num_reg_images == 12
    odd = scan(config(tmp_path, subset("train", "num_repeats = 3") + subset("reg", "is_reg = true\nnum_repeats = 2")))
    # each reg image first with its own 2 repeats (4), then one more each in turn up to 9
    assert [i.num_repeats for i in odd.items if i.is_reg] == [5, 4]
    many = config(tmp_path, subset("train") + subset("reg", "is_reg = true\nnum_repeats = 5"))
    result = scan(many)
    assert result.num_train_images == 3 and result.num_reg_images == 5  # first reg image with its 5 repeats
    assert result.subsets[1].unused_reg == 1 and any("not used" in w for w in result.warnings)


def test_metadata_file_subset(tmp_path):
    png(tmp_path / "ft" / "x.png")
    png(tmp_path / "ft" / "y.png")
    (tmp_path / "meta.json").write_text(json.dumps(
        {"x": {"caption": "a photo", "tags": "red, square"}, "y.png": {"tags": "blue"}}))
    path = config(tmp_path, '[[datasets.subsets]]\nmetadata_file = "meta.json"\nimage_dir = "ft"\n')
    result = scan(path)
    assert [(i.path.name, i.caption) for i in result.items] == [("x.png", "a photo, red, square"), ("y.png", "blue")]


def test_manifest_hash_follows_content_not_location(tmp_path):
    png(tmp_path / "a" / "img" / "x.png")
    (tmp_path / "a" / "img" / "x.caption").write_text("one")
    first = scan(config(tmp_path / "a", subset("img"))).manifest_hash()
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert scan(tmp_path / "b" / "dataset.toml").manifest_hash() == first
    (tmp_path / "b" / "img" / "x.caption").write_text("two")
    assert scan(tmp_path / "b" / "dataset.toml").manifest_hash() != first


# --- loading pixels -----------------------------------------------------------------------

def test_loaded_image_matches_bucket_and_geometry(tmp_path):
    path = gradient_png(tmp_path / "g.png", (96, 64))
    loaded = load_training_image(path, (64, 64), rng=random.Random(0))
    assert loaded.pixels.shape == (64, 64, 3) and loaded.pixels.dtype == np.uint8
    g = loaded.geometry
    assert g.resized == (96, 64) and (g.crop_left, g.crop_top) == (16, 0)
    # no resize needed: the crop is exactly columns 16..79 of the source
    source = np.asarray(Image.open(path))
    assert np.array_equal(loaded.pixels, source[:, 16:80])
    assert loaded.time_ids() == (64, 96, 0, 16, 64, 64)


def test_flip_mirrors_pixels_and_crop_left(tmp_path):
    path = gradient_png(tmp_path / "g.png", (96, 64))
    source = np.asarray(Image.open(path))
    flips = []
    for seed in range(20):
        loaded = load_training_image(path, (64, 64), rng=random.Random(seed), random_crop=True, flip_aug=True)
        left = loaded.geometry.crop_left
        if loaded.flipped:
            original_left = 96 - left - 64
            assert np.array_equal(loaded.pixels, source[:, original_left:original_left + 64][:, ::-1])
        else:
            assert np.array_equal(loaded.pixels, source[:, left:left + 64])
        flips.append(loaded.flipped)
    assert any(flips) and not all(flips)


def test_color_aug_is_seeded_and_hue_shift_rotates_hue(tmp_path):
    path = gradient_png(tmp_path / "g.png", (64, 64))
    a = [load_training_image(path, (64, 64), rng=random.Random(s), color_aug=True).pixels for s in range(12)]
    b = [load_training_image(path, (64, 64), rng=random.Random(s), color_aug=True).pixels for s in range(12)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    plain = load_training_image(path, (64, 64), rng=random.Random(0)).pixels
    assert any(not np.array_equal(x, plain) for x in a)
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    shifted = hue_shift(red, 60)  # 120° -> green
    assert shifted[0, 0, 1] > 200 and shifted[0, 0, 0] < 60


def test_alpha_mask_comes_back_with_the_crop(tmp_path):
    rgba = np.zeros((64, 96, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:, :48, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    loaded = load_training_image(tmp_path / "a.png", (64, 64), rng=random.Random(0), alpha_mask=True)
    assert loaded.alpha is not None and loaded.alpha.shape == (64, 64)
    assert loaded.alpha[:, :32].max() == 0 and loaded.alpha[:, 32:].min() == 1.0
    assert loaded.pixels.shape == (64, 64, 3)
