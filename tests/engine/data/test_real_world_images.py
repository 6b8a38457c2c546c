"""Issue 15 items 1, 2 and 9 (images): the files users actually have, built inside each test."""
from __future__ import annotations

import random
import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data.dataset_config import load_dataset_config
from engine.data.image_files import BadImage, open_upright, read_image_size, to_rgb8
from engine.data.images import load_training_image
from engine.data.scan import scan_dataset
from engine.errors import DataError

RAMP = np.arange(256, dtype=np.uint8)  # one row, 0..255


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_with_late_exif(path: Path, array: np.ndarray, orientation: int) -> Path:
    """A PNG whose eXIf chunk comes after the image data (allowed by the PNG spec, written by some tools)."""
    buffer = BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG")
    raw = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = orientation
    tiff = exif.tobytes()[6:] if exif.tobytes().startswith(b"Exif\x00\x00") else exif.tobytes()
    iend = raw.rindex(b"IEND") - 4
    path.write_bytes(raw[:iend] + _chunk(b"eXIf", tiff) + raw[iend:])
    return path


def test_late_exif_png_is_bucketed_and_trained_upright(tmp_path):
    # 64 wide, 32 tall, left half red, right half blue; orientation 6 = rotate 90° clockwise to view
    array = np.zeros((32, 64, 3), np.uint8)
    array[:, :32, 0] = 255
    array[:, 32:, 2] = 255
    path = png_with_late_exif(tmp_path / "late.png", array, 6)
    with Image.open(path) as im:
        assert "exif" not in im.info  # not seen before the image data: the old size reader missed it
    assert read_image_size(path) == (32, 64)
    pixels = np.asarray(open_upright(path))
    assert pixels.shape == (64, 32, 3)
    assert tuple(pixels[2, 16]) == (255, 0, 0) and tuple(pixels[60, 16]) == (0, 0, 255)  # red on top after turning
    loaded = load_training_image(path, (32, 64), rng=random.Random(0))
    assert loaded.pixels.shape == (64, 32, 3) and loaded.time_ids()[:2] == (64, 32)


def test_scan_puts_the_late_exif_image_in_the_portrait_bucket(tmp_path):
    array = np.full((64, 128, 3), 90, np.uint8)
    (tmp_path / "img").mkdir()
    png_with_late_exif(tmp_path / "img" / "a.png", array, 8)
    toml = tmp_path / "d.toml"
    toml.write_text('[[datasets]]\nresolution = 128\nenable_bucket = true\nmin_bucket_reso = 64\n'
                    'max_bucket_reso = 256\n[[datasets.subsets]]\nimage_dir = "img"\nclass_tokens = "x"\n')
    item = scan_dataset(load_dataset_config(toml)).items[0]
    assert item.size == (64, 128) and item.bucket[0] < item.bucket[1]


# --- every Pillow mode against a known ramp ---------------------------------------------

def _gray_ramp_image(mode: str) -> Image.Image:
    if mode in ("I;16", "I;16B", "I;16L"):
        values = RAMP.astype(np.uint16) * 257
        if mode == "I;16":
            return Image.fromarray(values[None, :])  # uint16 -> Pillow's I;16
        return Image.frombytes(mode, (256, 1), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    if mode == "I":
        return Image.fromarray((RAMP.astype(np.int32) * 257)[None, :], "I")
    if mode == "F":
        return Image.fromarray((RAMP.astype(np.float32) / 255)[None, :], "F")
    gray = Image.fromarray(RAMP[None, :], "L")
    if mode == "P":
        return gray.convert("RGB").quantize(256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    return gray.convert(mode)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBX", "CMYK", "I;16", "I;16B", "I;16L", "I", "F", "P", "LA", "PA",
                                  "RGBA", "La", "RGBa", "YCbCr", "HSV", "LAB"])
def test_every_mode_becomes_8bit_rgb_with_the_ramp_intact(mode):
    if mode == "PA":
        im = Image.fromarray(RAMP[None, :], "L").convert("P").convert("PA")
    elif mode in ("La", "RGBa"):
        im = Image.fromarray(RAMP[None, :], "L").convert("LA" if mode == "La" else "RGBA").convert(mode)
    else:
        im = _gray_ramp_image(mode)
    out = to_rgb8(im)
    array = np.asarray(out)
    assert array.dtype == np.uint8 and out.mode in ("RGB", "RGBA")
    assert out.mode == ("RGBA" if mode in ("LA", "PA", "RGBA", "La", "RGBa") else "RGB")
    tolerance = {"YCbCr": 2, "LAB": 3, "HSV": 2, "P": 2}.get(mode, 0)
    for channel in range(3):
        assert np.abs(array[0, :, channel].astype(int) - RAMP.astype(int)).max() <= tolerance, (mode, channel)


def test_mode_1_is_black_and_white():
    im = Image.fromarray(RAMP[None, :], "L").convert("1", dither=Image.Dither.NONE)
    array = np.asarray(to_rgb8(im))
    assert set(np.unique(array)) == {0, 255} and array[0, 0, 0] == 0 and array[0, 255, 0] == 255


def test_16_bit_grayscale_png_trains_as_its_values_not_near_white(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.tile(RAMP.astype(np.uint16) * 257, (4, 1))).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    pixels = np.asarray(open_upright(path))
    assert pixels.shape == (4, 256, 3) and np.array_equal(pixels[0, :, 1], RAMP)
    assert pixels.mean() == pytest.approx(127.5, abs=0.01)  # clipped values would average about 254


@pytest.mark.parametrize("mode,values,words", [
    ("F", np.array([[0.0, 2.5]], np.float32), "float image (mode 'F') with values outside 0..1"),
    ("I", np.array([[-5, 70000]], np.int32), "integer image (mode 'I') with values outside 0..65535"),
])
def test_modes_without_a_known_scale_are_refused_by_name(mode, values, words):
    with pytest.raises(DataError, match=r"x\.tif: 32-bit " + words.replace("(", r"\(").replace(")", r"\)")):
        to_rgb8(Image.fromarray(values, mode), "x.tif")


# --- Pillow's size limit, said as a size ------------------------------------------------

def test_image_over_pillows_limit_names_size_limit_and_the_option(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    monkeypatch.setenv("SDXL_TUI_MAX_IMAGE_PIXELS", "500")  # 1200 pixels > 2 × 500: Pillow refuses
    with pytest.raises(BadImage) as caught:
        read_image_size(path)
    text = str(caught.value)
    assert "image has 1,200 pixels, over Pillow's limit of 1,000" in text and "unreadable" not in text
    assert "SDXL_TUI_MAX_IMAGE_PIXELS=1201" in text
    with pytest.raises(DataError, match="over Pillow's limit"):
        open_upright(path)
    monkeypatch.setenv("SDXL_TUI_MAX_IMAGE_PIXELS", "2000")
    assert read_image_size(path) == (40, 30)
