"""The demo dataset: images, captions, sd-scripts dataset TOML, sample prompts, CLI commands."""
from __future__ import annotations

import numpy as np
import tomllib
from PIL import Image

from engine.demo.dataset import (
    BACKGROUNDS,
    COLOURS,
    DEMO_IMAGES,
    SAMPLE_PROMPTS,
    caption_words,
    draw_image,
    make_demo_dataset,
)


def test_a_dozen_captioned_images_in_three_aspect_ratios(demo_dataset):
    images = sorted(demo_dataset.image_dir.glob("*.png"))
    assert len(images) == demo_dataset.num_images == 12
    sizes = {Image.open(path).size for path in images}
    assert sizes == {(64, 64), (192, 64), (64, 192)}
    for path in images:
        caption = path.with_suffix(".txt").read_text().strip()
        assert caption.startswith("a ") and caption.endswith(" background")


def test_pixels_match_their_caption(demo_dataset):
    for item in DEMO_IMAGES:
        pixels = np.asarray(Image.open(demo_dataset.image_dir / f"{item.name}.png").convert("RGB"))
        height, width, _ = pixels.shape
        caption = (demo_dataset.image_dir / f"{item.name}.txt").read_text()
        centre = tuple(pixels[height // 2, width // 2])
        corner = tuple(pixels[0, 0])
        assert centre == COLOURS[item.colour] and item.colour in caption
        assert corner == BACKGROUNDS[item.background] and item.background in caption


def test_shapes_are_distinguishable():
    # Fill ratio in the shape's bounding square: circle ~ pi/4, square 1, triangle 1/2.
    fills = {}
    for item in DEMO_IMAGES[:3]:
        pixels = np.asarray(draw_image(item, 64)).astype(int)
        background = np.array(pixels[0, 0])
        fills[item.shape] = (np.abs(pixels - background).sum(-1) > 0).mean() / 0.7 ** 2
    assert abs(fills["square"] - 1.0) < 0.05
    assert abs(fills["circle"] - np.pi / 4) < 0.05
    assert abs(fills["triangle"] - 0.5) < 0.05


def test_same_call_same_files(tmp_path, demo_dataset):
    again = make_demo_dataset(tmp_path / "again")
    for item in DEMO_IMAGES:
        left = np.asarray(Image.open(again.image_dir / f"{item.name}.png"))
        right = np.asarray(Image.open(demo_dataset.image_dir / f"{item.name}.png"))
        assert np.array_equal(left, right)


def test_dataset_toml_is_sd_scripts_format(demo_dataset):
    data = tomllib.loads(demo_dataset.dataset_toml.read_text())
    assert data["general"] == {"caption_extension": ".txt", "enable_bucket": True, "shuffle_caption": False}
    (dataset,) = data["datasets"]
    assert (dataset["resolution"], dataset["batch_size"]) == (64, 2)
    assert (dataset["bucket_reso_steps"], dataset["min_bucket_reso"], dataset["max_bucket_reso"]) == (32, 32, 128)
    (subset,) = dataset["subsets"]
    assert subset["image_dir"] == str(demo_dataset.image_dir) and subset["image_dir"].startswith("/")
    assert subset["num_repeats"] >= 1


def test_our_dataset_reader_accepts_it_and_uses_three_buckets(demo_dataset):
    from engine.data.dataset_config import load_dataset_config
    from engine.data.scan import scan_dataset

    scanned = scan_dataset(load_dataset_config(demo_dataset.dataset_toml))
    assert not scanned.problems and len(scanned.items) == 12
    assert {item.caption for item in scanned.items} == {item.caption for item in DEMO_IMAGES}
    buckets = {bucket for (_dataset, bucket) in scanned.bucket_histogram()}
    assert buckets == {(64, 64), (96, 32), (32, 96)}


def test_sample_prompts_parse_with_sd_scripts_options(demo_dataset):
    from engine.config.sample_prompts import parse_sample_prompts

    prompts = parse_sample_prompts(demo_dataset.sample_prompts)
    assert [p.prompt for p in prompts] == list(SAMPLE_PROMPTS)
    first = prompts[0]
    assert (first.width, first.height, first.sample_steps, first.scale, first.seed) == (64, 64, 4, 5.0, 1)
    assert "--w 64 --h 64 --s 4 --l 5 --d 1" in demo_dataset.sample_prompts.read_text()


def test_every_caption_word_is_one_token_of_the_tiny_tokenizer():
    from engine.demo.tiny_model import build_vocab, learn_bpe

    vocab = build_vocab(learn_bpe(caption_words()))
    assert all(word + "</w>" in vocab for word in caption_words())


def test_cli_commands_write_both(tmp_path, capsys):
    from sdxl_tui.cli import main

    assert main(["make-demo-dataset", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "dataset.toml").is_file()
    assert main(["make-tiny-model", str(tmp_path / "model")]) == 0
    assert (tmp_path / "model" / "tiny-sdxl.safetensors").is_file()
    assert (tmp_path / "model" / "tiny-sdxl" / "model_index.json").is_file()
    out = capsys.readouterr().out
    assert "dataset.toml" in out and "tiny-sdxl.safetensors" in out


def test_cli_refuses_a_bad_resolution(tmp_path):
    from sdxl_tui.cli import main

    assert main(["make-demo-dataset", str(tmp_path / "demo"), "--resolution", "50"]) == 2
