"""Load one training image at its bucket size, with the geometry SDXL's time ids need.

The resize/crop comes from `engine.data.buckets.crop_geometry`, so `LoadedImage.time_ids()` is
the real one. `flip_aug` flips the cropped image and reports the crop's left edge as seen in
the flipped picture. `color_aug` follows sd-scripts: with probability 0.33, either a hue
shift of up to ±8 OpenCV units (±16°) or a gamma in [0.95, 1.05] applied, as sd-scripts does, to
the raw 0..255 values (`clip(v ** gamma, 0, 255)`, truncated to uint8): so gamma > 1 brightens and
saturates (200 -> 255) and gamma < 1 darkens (200 -> 153), unlike a gamma on 0..1 values.
No torch here: the training-data module turns the array into a tensor.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from engine.data.buckets import CropGeometry, Size, crop_geometry
from engine.data.image_files import open_upright

HUE_SHIFT_LIMIT = 8  # OpenCV hue units (0..180), as sd-scripts
COLOR_AUG_PROBABILITY = 0.33


@dataclass(frozen=True)
class LoadedImage:
    """One image ready for the VAE, with the crop that made it."""
    pixels: np.ndarray  # H x W x 3 uint8 RGB, at the bucket size
    geometry: CropGeometry  # already mirrored when `flipped`
    flipped: bool
    alpha: Optional[np.ndarray] = None  # H x W float32 in 0..1 when alpha_mask is on

    def time_ids(self) -> tuple[int, int, int, int, int, int]:
        """SDXL's add_time_ids: original h, w, crop top, left, target h, w."""
        return self.geometry.time_ids()


def _resample(name: Optional[str]):
    from PIL import Image

    table = {
        None: Image.Resampling.LANCZOS, "lanczos": Image.Resampling.LANCZOS,
        "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
        "linear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
        "cubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX, "box": Image.Resampling.BOX,
    }
    return table[name]


def load_training_image(path: Path, bucket: Size, *, rng: random.Random, resized: Optional[Size] = None,
                        random_crop: bool = False, flip_aug: bool = False, color_aug: bool = False,
                        alpha_mask: bool = False, interpolation: Optional[str] = None) -> LoadedImage:
    """Resize to cover `bucket`, crop (centred or random), maybe flip and colour-shift.
    Draw order from `rng`: crop offsets, flip, colour aug."""
    image = open_upright(Path(path))
    geometry = crop_geometry(image.size, bucket, random_crop=random_crop, rng=rng, resized=resized)
    if image.size != geometry.resized:
        image = image.resize(geometry.resized, _resample(interpolation))
    left, top = geometry.crop_left, geometry.crop_top
    image = image.crop((left, top, left + bucket[0], top + bucket[1]))
    array = np.asarray(image)
    alpha = None
    if array.shape[2] == 4:
        if alpha_mask:
            alpha = array[:, :, 3].astype(np.float32) / 255.0
        array = np.ascontiguousarray(array[:, :, :3])
    elif alpha_mask:
        alpha = np.ones(array.shape[:2], dtype=np.float32)
    flipped = bool(flip_aug and rng.random() < 0.5)
    if flipped:
        array = np.ascontiguousarray(array[:, ::-1])
        alpha = None if alpha is None else np.ascontiguousarray(alpha[:, ::-1])
        geometry = geometry.flipped()
    if color_aug:
        array = color_augment(array, rng)
    return LoadedImage(array, geometry, flipped, alpha)


def color_augment(array: np.ndarray, rng: random.Random) -> np.ndarray:
    """sd-scripts' color_aug on an H x W x 3 uint8 array: with probability 0.33, a hue shift of up to ±8 OpenCV units
    or else a gamma in [0.95, 1.05]; otherwise the array unchanged."""
    if rng.random() > COLOR_AUG_PROBABILITY:
        return array
    if rng.random() > 0.5:
        return hue_shift(array, rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT))
    gamma = rng.uniform(0.95, 1.05)
    return np.clip(array.astype(np.float64) ** gamma, 0, 255).astype(np.uint8)


def hue_shift(array: np.ndarray, shift_opencv_units: float) -> np.ndarray:
    """Rotate hue by `shift` OpenCV units (180 per turn)."""
    from PIL import Image

    hsv = np.asarray(Image.fromarray(array, "RGB").convert("HSV")).copy()
    shift = int(round(shift_opencv_units * 256 / 180)) % 256  # PIL's hue runs 0..255
    hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + shift) % 256
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
