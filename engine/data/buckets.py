"""Aspect-ratio buckets as sd-scripts makes them, and the resize/crop geometry of one image.

The geometry is a pure function so SDXL's size conditioning (original size, crop top-left,
target size) is computed from the very resize and crop the image goes through.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Optional, Sequence

Size = tuple[int, int]  # (width, height)


def make_buckets(max_reso: Size, min_size: int = 256, max_size: int = 1024, step: int = 64) -> list[Size]:
    """sd-scripts' predefined buckets for a max resolution: one square of side sqrt(area)
    rounded down to the step, then for each width from min to max in steps the height
    min(max, area / width rounded down to the step), kept if >= min, in both orientations."""
    max_area = max_reso[0] * max_reso[1]
    buckets: set[Size] = set()
    side = int(math.sqrt(max_area) // step) * step
    buckets.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets)


@dataclass(frozen=True)
class BucketChoice:
    """The bucket an image goes to, the size it is resized to before the crop, and how far the aspects differ."""
    bucket: Size
    resized: Size  # the image's size after resizing, before the crop to `bucket`
    aspect_error: float  # bucket aspect minus image aspect


def _round_to_step(x: float, step: int) -> int:
    value = int(x + 0.5)
    return value - value % step


def _cover_size(original: Size, bucket: Size) -> Size:
    """Scale `original` (keeping its aspect) so it covers `bucket`, as sd-scripts rounds it."""
    w, h = original
    bw, bh = bucket
    scale = bh / h if w / h > bw / bh else bw / w
    return (max(bw, int(w * scale + 0.5)), max(bh, int(h * scale + 0.5)))


def select_bucket(size: Size, buckets: Sequence[Size]) -> BucketChoice:
    """The bucket whose aspect is nearest the image's (an exact size match wins)."""
    w, h = size
    aspect = w / h
    if tuple(size) in buckets:
        bucket = (w, h)
    else:
        # first of the sorted list on ties, as sd-scripts' argmin
        bucket = min(sorted(buckets), key=lambda b: abs(b[0] / b[1] - aspect))
    return BucketChoice(bucket, _cover_size(size, bucket), bucket[0] / bucket[1] - aspect)


def select_bucket_no_upscale(size: Size, max_reso: Size, step: int) -> BucketChoice:
    """`bucket_no_upscale`: images larger than the max area shrink (keeping aspect) to fit it,
    smaller ones keep their size; the bucket is that size rounded down to the step."""
    w, h = size
    aspect = w / h
    max_area = max_reso[0] * max_reso[1]
    if w * h > max_area:
        rw = math.sqrt(max_area * aspect)
        rh = max_area / rw
        bw = _round_to_step(rw, step)
        bh_w = _round_to_step(bw / aspect, step)
        bh = _round_to_step(rh, step)
        bw_h = _round_to_step(bh * aspect, step)
        err_w = abs(bw / bh_w - aspect) if bh_w else math.inf
        err_h = abs(bw_h / bh - aspect) if bh else math.inf
        resized = (bw, int(bw / aspect + 0.5)) if err_w < err_h else (int(bh * aspect + 0.5), bh)
    else:
        resized = (w, h)
    bucket = (max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step))
    if bucket[0] > resized[0] or bucket[1] > resized[1]:  # tiny image: cover the minimal bucket
        resized = _cover_size(size, bucket)
    return BucketChoice(bucket, resized, bucket[0] / bucket[1] - aspect)


@dataclass(frozen=True)
class Bucketer:
    """How one dataset assigns images to buckets."""

    resolution: Size
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False

    @classmethod
    def for_dataset(cls, spec) -> "Bucketer":
        """The bucketer for one [[datasets]] entry (a DatasetSpec)."""
        return cls(tuple(spec.resolution), spec.enable_bucket, spec.min_bucket_reso, spec.max_bucket_reso,
                   spec.bucket_reso_steps, spec.bucket_no_upscale)

    def predefined(self) -> list[Size]:
        """The buckets (width, height) in pixels: sd-scripts' list from min to max reso in `bucket_reso_steps`, or
        the one resolution when bucketing is off."""
        if not self.enable_bucket:
            return [self.resolution]
        return make_buckets(self.resolution, self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps)

    def choose(self, size: Size) -> BucketChoice:
        """The bucket for an image of `size` (width, height) in pixels; with bucket_no_upscale a bucket made for it
        that never upscales, as sd-scripts."""
        if self.enable_bucket and self.bucket_no_upscale:
            return select_bucket_no_upscale(size, self.resolution, self.bucket_reso_steps)
        return select_bucket(size, self.predefined())


@dataclass(frozen=True)
class CropGeometry:
    """What happens to one image: resize `original` to `resized`, then crop `bucket` at
    (left, top). SDXL's time ids are (original h, w, crop top, left, target h, w)."""

    original: Size
    resized: Size
    bucket: Size
    crop_left: int
    crop_top: int

    @property
    def crop_top_left(self) -> tuple[int, int]:
        """(crop top, crop left) in pixels, the order SDXL's time ids use."""
        return (self.crop_top, self.crop_left)

    def flipped(self) -> "CropGeometry":
        """The same crop seen after a horizontal flip of the cropped image: the window's
        left edge, measured in the flipped resized image."""
        left = self.resized[0] - self.crop_left - self.bucket[0]
        return CropGeometry(self.original, self.resized, self.bucket, left, self.crop_top)

    def time_ids(self) -> tuple[int, int, int, int, int, int]:
        """SDXL's add_time_ids: (original h, w, crop top, left, target h, w), in pixels."""
        return (self.original[1], self.original[0], self.crop_top, self.crop_left,
                self.bucket[1], self.bucket[0])


def crop_geometry(original: Size, bucket: Size, *, random_crop: bool = False,
                  rng: Optional[random.Random] = None, resized: Optional[Size] = None) -> CropGeometry:
    """Resize to cover `bucket` (or to the given `resized`, e.g. from bucket_no_upscale) and crop:
    centred, or at a random offset drawn from `rng` when `random_crop`."""
    if resized is None:
        resized = _cover_size(original, bucket)
    if resized[0] < bucket[0] or resized[1] < bucket[1]:
        raise ValueError(f"resized {resized} does not cover bucket {bucket}")
    if random_crop and rng is None:
        raise ValueError("random_crop needs an rng")
    spare_w = resized[0] - bucket[0]
    spare_h = resized[1] - bucket[1]
    if random_crop:
        left = rng.randint(0, spare_w) if spare_w else 0  # type: ignore[union-attr]
        top = rng.randint(0, spare_h) if spare_h else 0  # type: ignore[union-attr]
    else:
        left, top = spare_w // 2, spare_h // 2
    return CropGeometry(tuple(original), tuple(resized), tuple(bucket), left, top)  # type: ignore[arg-type]
