"""What the training loop consumes: deterministic batches with real geometry, captions,
loss weights and figures for metadata; the same draws with or without workers and caches."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from train_helpers import one_torch_thread, scan_for  # noqa: E402,F401  (autouse: one thread is faster for the tiny model here)

from engine.config.schema import RunConfig  # noqa: E402
from engine.control.run_control import RunControl  # noqa: E402
from engine.data.training_data import prepare_training_data  # noqa: E402


@pytest.fixture(scope="module")
def model(frozen_tiny_sdxl):
    return frozen_tiny_sdxl


def write_toml(root: Path, body: str) -> Path:
    toml = root / "dataset.toml"
    toml.write_text(body)
    return toml


def demo_toml(root: Path, demo, subset: str = "", extra_subsets: str = "", batch_size: int = 2) -> Path:
    images = root / "images"
    if not images.exists():
        shutil.copytree(demo.image_dir, images)
    return write_toml(root, (
        "[general]\ncaption_extension = \".txt\"\nenable_bucket = true\n"
        f"\n[[datasets]]\nresolution = 64\nbatch_size = {batch_size}\nbucket_reso_steps = 32\n"
        "min_bucket_reso = 32\nmax_bucket_reso = 128\n"
        f"\n  [[datasets.subsets]]\n  image_dir = \"{images}\"\n  num_repeats = 2\n{subset}{extra_subsets}"))


def prepare(model, toml, *, rank=0, world_size=1, base_dir=None, **options):
    cfg = RunConfig().with_values(dataset_config=str(toml), **options)
    return prepare_training_data(cfg, model, emit=lambda e: None, device="cpu", dtype=torch.float32,
                                 control=RunControl(), rank=rank, world_size=world_size,
                                 scanned=scan_for(cfg, base_dir))


def summary(data, epoch, skip=0):
    return [(b.paths, b.captions, b.time_ids.tolist()) for b in data.epoch_batches(epoch, skip=skip)]


def test_figures_for_the_loop_and_metadata(model, demo_dataset, tmp_path):
    data = prepare(model, demo_toml(tmp_path, demo_dataset))
    # 12 images x 2 repeats in three buckets of 8, batch size 2
    assert data.batches_per_epoch == 12
    assert data.num_train_images == 24 and data.num_reg_images == 0
    buckets = data.bucket_info["buckets"]
    assert sorted(tuple(b["resolution"]) for b in buckets.values()) == [(32, 96), (64, 64), (96, 32)]
    assert sum(b["count"] for b in buckets.values()) == 24
    assert data.tag_frequency["images"]["a red circle on a white background"] == 1
    assert len(data.manifest_hash) == 64
    batches = list(data.epoch_batches(0))
    assert len(batches) == 12
    assert all(len(b.paths) == 2 and b.loss_weights.tolist() == [1.0, 1.0] for b in batches)


def test_same_seed_same_batches_other_epoch_other_order(model, demo_dataset, tmp_path):
    toml = demo_toml(tmp_path, demo_dataset)
    a, b = prepare(model, toml), prepare(model, toml)
    assert summary(a, 0) == summary(b, 0)
    assert summary(a, 0) != summary(a, 1)
    other_seed = prepare(model, toml, seed=7)
    assert summary(a, 0) != summary(other_seed, 0)


def test_skip_resumes_mid_epoch(model, demo_dataset, tmp_path):
    data = prepare(model, demo_toml(tmp_path, demo_dataset, subset="  shuffle_caption = true\n  flip_aug = true\n"),
                   cache_latents=False)
    full = summary(data, 2)
    assert summary(data, 2, skip=5) == full[5:]


def test_time_ids_come_from_the_real_crop(model, tmp_path):
    """A 100x60 image in a 64x64 bucket: resized to 107x64, cropped 21 px from the left."""
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (100, 60), (10, 20, 30)).save(images / "wide.png")
    (images / "wide.txt").write_text("wide\n")
    toml = write_toml(tmp_path, f"[[datasets]]\nresolution = 64\nbatch_size = 1\n"
                                f"[[datasets.subsets]]\nimage_dir = \"{images}\"\ncaption_extension = \".txt\"\n")
    for cached in (True, False):
        batch = next(iter(prepare(model, toml, cache_latents=cached).epoch_batches(0)))
        assert batch.time_ids.tolist() == [[60.0, 100.0, 0.0, 21.0, 64.0, 64.0]]
        assert batch.time_ids.dtype == torch.float32


def test_random_crop_moves_the_crop_and_time_ids_follow(model, tmp_path):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    gradient = Image.linear_gradient("L").resize((160, 64)).convert("RGB")
    gradient.save(images / "wide.png")
    (images / "wide.txt").write_text("wide\n")
    toml = write_toml(tmp_path, f"[[datasets]]\nresolution = 64\nbatch_size = 1\n"
                                f"[[datasets.subsets]]\nimage_dir = \"{images}\"\ncaption_extension = \".txt\"\n"
                                "random_crop = true\nnum_repeats = 8\n")
    data = prepare(model, toml, cache_latents=False)
    lefts = {int(b.time_ids[0, 3]) for b in data.epoch_batches(0)}
    assert len(lefts) > 1 and all(0 <= left <= 96 for left in lefts)


def test_regularisation_images_get_the_prior_loss_weight(model, demo_dataset, tmp_path):
    reg = tmp_path / "reg"
    reg.mkdir()
    for path in sorted(demo_dataset.image_dir.glob("0[0-3]_*.png")):
        shutil.copy(path, reg / path.name)
    toml = demo_toml(tmp_path, demo_dataset, batch_size=1,
                     extra_subsets=f"\n  [[datasets.subsets]]\n  image_dir = \"{reg}\"\n  is_reg = true\n"
                                   "  class_tokens = \"shape\"\n")
    data = prepare(model, toml, prior_loss_weight=0.25)
    assert data.num_reg_images == data.num_train_images == 24
    weights = {}
    for batch in data.epoch_batches(0):
        for path, weight in zip(batch.paths, batch.loss_weights.tolist()):
            weights[path] = weight
    assert {w for p, w in weights.items() if p.startswith(str(reg))} == {0.25}
    assert {w for p, w in weights.items() if not p.startswith(str(reg))} == {1.0}
    # reg images have no caption files: class_tokens stands in
    reg_captions = {c for b in data.epoch_batches(0) for p, c in zip(b.paths, b.captions) if p.startswith(str(reg))}
    assert reg_captions == {"shape"}


def test_captions_are_processed_per_epoch(model, demo_dataset, tmp_path):
    toml = demo_toml(tmp_path, demo_dataset, subset="  caption_prefix = \"pfx\"\n  shuffle_caption = true\n"
                                                     "  caption_separator = \" \"\n")
    data = prepare(model, toml, cache_latents=False)
    captions = [c for b in data.epoch_batches(0) for c in b.captions]
    assert all("pfx" in c for c in captions)
    assert any(not c.startswith("pfx") for c in captions)  # shuffled, prefix included
    assert captions == [c for b in data.epoch_batches(0) for c in b.captions]


def test_workers_load_the_same_pixels(model, demo_dataset, tmp_path):
    toml = demo_toml(tmp_path, demo_dataset, subset="  flip_aug = true\n  color_aug = true\n")
    serial = prepare(model, toml, cache_latents=False)
    parallel = prepare(model, toml, cache_latents=False, max_data_loader_n_workers=2)
    for a, b in zip(serial.epoch_batches(1), parallel.epoch_batches(1)):
        assert a.paths == b.paths
        torch.testing.assert_close(a.pixels, b.pixels)
        torch.testing.assert_close(a.time_ids, b.time_ids)


def test_ranks_split_the_epoch(model, demo_dataset, tmp_path):
    toml = demo_toml(tmp_path, demo_dataset)
    ranks = [prepare(model, toml, rank=r, world_size=2) for r in range(2)]
    assert ranks[0].batches_per_epoch == ranks[1].batches_per_epoch == 6
    seen = [[tuple(b.paths) for b in data.epoch_batches(0)] for data in ranks]
    everything = [tuple(b.paths) for b in prepare(model, toml).epoch_batches(0)]
    assert sorted(seen[0] + seen[1]) == sorted(everything)


def test_relative_dataset_config_resolves_against_base_dir(model, demo_dataset, tmp_path):
    demo_toml(tmp_path, demo_dataset)
    data = prepare(model, "dataset.toml", base_dir=tmp_path)
    assert data.num_train_images == 24


@pytest.mark.parametrize("subset, general", [("  alpha_mask = true\n", ""), ("", "network_multiplier = 0.5\n")])
def test_keys_that_would_be_ignored_are_refused(model, demo_dataset, tmp_path, subset, general):
    from engine.errors import ConfigError

    toml = demo_toml(tmp_path, demo_dataset, subset=subset)
    toml.write_text(toml.read_text().replace("[general]\n", "[general]\n" + general))
    with pytest.raises(ConfigError, match="not supported"):
        prepare(model, toml)
