"""Epoch batches: repeats, one bucket per batch, per-dataset batch size, seeds, ranks, resume."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from engine.data.batching import batches_per_epoch, epoch_batches, iter_epoch, rank_batches, steps_per_epoch
from engine.data.dataset_config import load_dataset_config
from engine.data.scan import scan_dataset


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root: Path = tmp_path_factory.mktemp("batching")
    sizes = {"sq": (512, 512), "wide": (768, 512), "tall": (512, 768)}
    for folder, count in (("one", 7), ("two", 5)):
        for n in range(count):
            kind = list(sizes)[n % 3]
            (root / folder).mkdir(exist_ok=True)
            Image.new("RGB", sizes[kind], (n, 0, 0)).save(root / folder / f"{kind}{n}.png")
    (root / "d.toml").write_text(
        '[general]\nenable_bucket = true\nmin_bucket_reso = 256\nmax_bucket_reso = 1024\n'
        '[[datasets]]\nresolution = 512\nbatch_size = 2\n'
        '[[datasets.subsets]]\nimage_dir = "one"\nnum_repeats = 3\nclass_tokens = "x"\n'
        '[[datasets]]\nresolution = 512\nbatch_size = 4\n'
        '[[datasets.subsets]]\nimage_dir = "two"\nclass_tokens = "y"\n')
    return scan_dataset(load_dataset_config(root / "d.toml"))


def test_each_image_appears_num_repeats_times(scanned):
    batches = epoch_batches(scanned, seed=1, epoch=1)
    seen = Counter(i for b in batches for i in b.items)
    assert seen == Counter({k: item.num_repeats for k, item in enumerate(scanned.items)})
    assert sum(seen.values()) == 7 * 3 + 5


def test_batches_stay_within_one_bucket_and_dataset(scanned):
    for batch in epoch_batches(scanned, seed=1, epoch=2):
        items = [scanned.items[i] for i in batch.items]
        assert {i.bucket for i in items} == {batch.bucket}
        assert {i.dataset_index for i in items} == {batch.dataset_index}
        assert len(items) <= (2 if batch.dataset_index == 0 else 4)


def test_batch_count_is_per_bucket_ceil(scanned):
    counts = Counter((i.dataset_index, i.bucket) for i in scanned.items for _ in range(i.num_repeats))
    expected = sum(-(-n // (2 if d == 0 else 4)) for (d, _), n in counts.items())
    assert batches_per_epoch(scanned) == expected == len(epoch_batches(scanned, 0, 1))
    assert steps_per_epoch(scanned, gradient_accumulation_steps=4) == -(-expected // 4)


def test_order_is_deterministic_per_seed_and_epoch(scanned):
    assert epoch_batches(scanned, 5, 3) == epoch_batches(scanned, 5, 3)
    assert epoch_batches(scanned, 5, 3) != epoch_batches(scanned, 5, 4)
    assert epoch_batches(scanned, 5, 3) != epoch_batches(scanned, 6, 3)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_ranks_get_disjoint_equal_shares(scanned, world_size):
    batches = epoch_batches(scanned, 9, 1)
    shares = [rank_batches(batches, r, world_size) for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1
    assert len(shares[0]) == batches_per_epoch(scanned, world_size) == len(batches) // world_size
    positions = [id(b) for s in shares for b in s]
    assert len(positions) == len(set(positions))  # no batch given to two ranks
    assert sum(len(s) for s in shares) > len(batches) - world_size
    with pytest.raises(ValueError):
        rank_batches(batches, world_size, world_size)


def test_resume_mid_epoch_continues_identically(scanned):
    full = list(iter_epoch(scanned, 11, 2, rank=1, world_size=2))
    resumed = list(iter_epoch(scanned, 11, 2, rank=1, world_size=2, start_batch=3))
    assert resumed == full[3:] and len(resumed) > 0
