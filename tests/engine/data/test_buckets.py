"""Aspect buckets as sd-scripts makes them, and the resize/crop geometry behind SDXL's time ids."""
from __future__ import annotations

import random

import pytest

from engine.data.buckets import Bucketer, crop_geometry, make_buckets, select_bucket, select_bucket_no_upscale

# sd-scripts' list for 1024², min 256, max 1024, step 64 (every width pairs with height 1024).
EXPECTED_1024_MAX_1024 = sorted(
    {(w, 1024) for w in range(256, 1025, 64)} | {(1024, w) for w in range(256, 1025, 64)})


def test_buckets_for_1024_with_max_1024():
    assert make_buckets((1024, 1024), 256, 1024, 64) == EXPECTED_1024_MAX_1024


def test_sdxl_standard_buckets_with_max_2048():
    buckets = make_buckets((1024, 1024), 256, 2048, 64)
    for known in [(1024, 1024), (832, 1216), (1216, 832), (896, 1152), (1152, 896), (768, 1344), (1344, 768),
                  (640, 1536), (1536, 640)]:
        assert known in buckets
    assert all(w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all(w * h <= 1024 * 1024 for w, h in buckets)
    assert all((h, w) in buckets for w, h in buckets)
    assert len(buckets) == len(set(buckets)) == 41


def test_square_bucket_is_sqrt_of_area_rounded_down_to_step():
    # sqrt(832 * 704) = 765.3 -> 704 with step 64, 736 with step 32
    assert [b for b in make_buckets((832, 704), 256, 1024, 64) if b[0] == b[1]] == [(704, 704)]
    assert (736, 736) in make_buckets((832, 704), 256, 1024, 32)


def test_nearest_aspect_and_exact_match():
    buckets = make_buckets((1024, 1024), 256, 2048, 64)
    assert select_bucket((3000, 2000), buckets).bucket == (1216, 832)
    assert select_bucket((2000, 3000), buckets).bucket == (832, 1216)
    assert select_bucket((500, 500), buckets).bucket == (1024, 1024)
    exact = select_bucket((896, 1152), buckets)
    assert exact.bucket == (896, 1152) and exact.resized == (896, 1152) and exact.aspect_error == 0


def test_resized_covers_the_bucket_keeping_aspect():
    choice = select_bucket((3000, 2000), make_buckets((1024, 1024), 256, 2048, 64))
    assert choice.resized == (1248, 832)  # height fits 832, width 3000 * 832 / 2000 = 1248


def test_no_upscale_keeps_small_images_and_rounds_down():
    small = select_bucket_no_upscale((500, 300), (1024, 1024), 64)
    assert small.resized == (500, 300) and small.bucket == (448, 256)
    big = select_bucket_no_upscale((2048, 2048), (1024, 1024), 64)
    assert big.bucket == (1024, 1024) and big.resized == (1024, 1024)
    wide = select_bucket_no_upscale((3000, 1000), (1024, 1024), 64)
    assert wide.bucket[0] * wide.bucket[1] <= 1024 * 1024
    assert wide.resized[0] >= wide.bucket[0] and wide.resized[1] >= wide.bucket[1]


def test_bucketer_without_buckets_uses_the_resolution():
    bucketer = Bucketer((1024, 1024), enable_bucket=False)
    choice = bucketer.choose((3000, 2000))
    assert choice.bucket == (1024, 1024) and choice.resized == (1536, 1024)


def test_centre_crop_geometry_and_time_ids():
    g = crop_geometry((3000, 2000), (1216, 832))
    assert g.resized == (1248, 832) and (g.crop_left, g.crop_top) == (16, 0)
    assert g.time_ids() == (2000, 3000, 0, 16, 832, 1216)  # original h, w, crop top, left, target h, w


def test_random_crop_is_seeded_and_inside_the_image():
    lefts = set()
    for seed in range(50):
        g = crop_geometry((3000, 2000), (1216, 832), random_crop=True, rng=random.Random(seed))
        assert 0 <= g.crop_left <= 32 and g.crop_top == 0
        again = crop_geometry((3000, 2000), (1216, 832), random_crop=True, rng=random.Random(seed))
        assert again == g
        lefts.add(g.crop_left)
    assert len(lefts) > 5
    with pytest.raises(ValueError):
        crop_geometry((3000, 2000), (1216, 832), random_crop=True)


def test_flipped_crop_left_is_measured_in_the_flipped_image():
    g = crop_geometry((3000, 2000), (1216, 832), random_crop=True, rng=random.Random(3))
    f = g.flipped()
    assert f.crop_left == g.resized[0] - g.crop_left - g.bucket[0]
    assert f.flipped() == g
    centred = crop_geometry((3000, 2000), (1216, 832))
    assert centred.flipped() == centred


def test_given_resized_size_is_used_for_no_upscale():
    g = crop_geometry((500, 300), (448, 256), resized=(500, 300))
    assert (g.crop_left, g.crop_top) == (26, 22)
    with pytest.raises(ValueError):
        crop_geometry((500, 300), (448, 256), resized=(400, 300))
