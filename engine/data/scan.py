"""Scan a dataset config: find images, read their sizes, read captions, assign buckets.

Nothing here decodes pixels: sizes come from the file header, and a cheap integrity check
(PIL's `verify()`, plus an end-of-image marker check for JPEG) catches truncated files
before a training run reaches them.

Choices, documented for users:
- Caption files must be UTF-8 (a BOM is fine). A file that is not is a problem naming it
  and the byte offset (re-save it as UTF-8) rather than a guessed decoding that would train on
  mojibake (engine/data/caption_files.py).
- Only the first non-blank line of a caption file is used (as sd-scripts without wildcards);
  more lines are said once per subset.
- A caption whose name differs from its image's only in Unicode normalisation (NFC/NFD, as
  macOS writes names) is matched to it (engine/data/folder_files.py).
- A missing or blank caption falls back to the subset's `class_tokens`, with a warning.
- Images are read non-recursively, extensions case-insensitively; dot-files are ignored.
- EXIF orientation is honoured (phone photos), so sizes are the upright ones.
- Regularisation images are balanced to the training images' count per dataset, as sd-scripts.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from engine.data.buckets import Bucketer, Size
from engine.data.dataset_config import DatasetConfig, DatasetSpec
from engine.data.subset_scan import LISTED, Collector, scan_subset
from engine.data.validation_split import split_for_validation
from engine.errors import DataError

UPSCALE_WARNING = 2.0  # warn when an image must be enlarged this much (linear) to fill its bucket


@dataclass(frozen=True)
class ImageItem:
    """One training image with its caption and bucket; sizes are (width, height) in pixels."""
    path: Path
    caption: str
    subset_index: int
    dataset_index: int
    size: Size  # original (width, height), upright
    is_reg: bool
    num_repeats: int
    bucket: Size
    resized: Size  # size after resizing, before the crop to `bucket`


@dataclass(frozen=True)
class SubsetStats:
    """Counts for one subset, for the plan and the dashboard."""
    subset_index: int
    dataset_index: int
    source: Path
    is_reg: bool
    num_repeats: int
    images: int = 0
    missing_captions: int = 0
    empty_captions: int = 0
    orphan_captions: int = 0
    unreadable: int = 0
    unused_reg: int = 0


@dataclass(frozen=True)
class ScannedDataset:
    """The dataset as scanned: every usable image, per-subset counts, and what stops or worries a run."""
    config: DatasetConfig
    items: tuple[ImageItem, ...]
    subsets: tuple[SubsetStats, ...]
    problems: tuple[str, ...] = ()  # each would stop training
    warnings: tuple[str, ...] = ()
    skipped: int = 0  # unreadable images left out (skip_bad_images)
    held_out: tuple[Path, ...] = ()  # images kept out of training by validation_split
    validation_items: tuple[ImageItem, ...] = ()  # the held-out images, bucketed, repeats 1 (as sd-scripts)

    def validation_set(self) -> Optional["ScannedDataset"]:
        """The held-out images as a dataset of their own (the validation loss's data), or None."""
        if not self.validation_items:
            return None
        return replace(self, items=self.validation_items, held_out=(), validation_items=(), problems=(),
                       warnings=(), skipped=0)

    def dataset(self, index: int) -> DatasetSpec:
        """The [[datasets]] entry number `index`."""
        return self.config.datasets[index]

    def items_of(self, dataset_index: int) -> list[ImageItem]:
        """The images of dataset number `dataset_index`."""
        return [i for i in self.items if i.dataset_index == dataset_index]

    @property
    def num_train_images(self) -> int:
        """Training images per epoch, counting repeats (sd-scripts' num_train_images)."""
        return sum(i.num_repeats for i in self.items if not i.is_reg)

    @property
    def num_reg_images(self) -> int:
        """Regularization images per epoch, counting repeats (sd-scripts' num_reg_images)."""
        return sum(i.num_repeats for i in self.items if i.is_reg)

    def bucket_histogram(self) -> dict[tuple[int, Size], int]:
        """(dataset index, bucket) -> images per epoch (repeats counted)."""
        out: dict[tuple[int, Size], int] = {}
        for item in self.items:
            key = (item.dataset_index, item.bucket)
            out[key] = out.get(key, 0) + item.num_repeats
        return dict(sorted(out.items()))

    def manifest_hash(self) -> str:
        """SHA-256 over file names (relative to their subset), file and image sizes, captions,
        repeats: equal hashes mean the same training data. Independent of where the folder lives."""
        digest = hashlib.sha256()
        sources = {s.subset_index: s.source for s in self.subsets}
        for item in sorted(self.items, key=lambda i: (i.dataset_index, i.subset_index, str(i.path))):
            base = sources[item.subset_index]
            base = base if base.is_dir() else base.parent
            try:
                name = item.path.relative_to(base).as_posix()
            except ValueError:
                name = item.path.name
            nbytes = item.path.stat().st_size if item.path.exists() else -1
            record = [item.dataset_index, item.subset_index, name, nbytes, list(item.size), item.caption,
                      item.num_repeats, item.is_reg]
            digest.update(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        return digest.hexdigest()


# --- the dataset ---------------------------------------------------------------------

def _items_for_dataset(spec: DatasetSpec, out: Collector, seed: int) -> tuple[list[ImageItem], list[SubsetStats]]:
    bucketer = Bucketer.for_dataset(spec)
    items: list[ImageItem] = []
    all_stats: list[SubsetStats] = []
    for subset in spec.subsets:
        found, stats = scan_subset(subset, out)
        if not subset.is_reg and spec.validation_split > 0:
            found, held = split_for_validation(found, spec.validation_split,
                                               seed if spec.validation_seed is None else spec.validation_seed)
            out.held_out.extend(path for path, _, _ in held)
            stats["images"] = len(found)
            for path, caption, size in held:  # sd-scripts' validation dataset takes each once
                choice = bucketer.choose(size)
                out.validation_items.append(ImageItem(path, caption, subset.index, spec.index, size, False, 1,
                                                      choice.bucket, choice.resized))
        for path, caption, size in found:
            choice = bucketer.choose(size)
            scale = max(choice.resized[0] / size[0], choice.resized[1] / size[1])
            if scale >= UPSCALE_WARNING:
                out.group("small images", f"{path}: {size[0]}x{size[1]} is enlarged {scale:.1f}x to fill "
                                          f"bucket {choice.bucket[0]}x{choice.bucket[1]}; it will look soft")
            items.append(ImageItem(path, caption, subset.index, spec.index, size, subset.is_reg,
                                   subset.num_repeats, choice.bucket, choice.resized))
        all_stats.append(SubsetStats(subset.index, spec.index, subset.source, subset.is_reg, subset.num_repeats,
                                     **stats))
    return _balance_reg(items, all_stats, out)


def _balance_reg(items: list[ImageItem], stats: list[SubsetStats],
                 out: Collector) -> tuple[list[ImageItem], list[SubsetStats]]:
    """sd-scripts repeats (or leaves out) regularisation images until they match the training
    images' count (repeats counted): first each with its own repeats, then one more each in turn."""
    train = [i for i in items if not i.is_reg]
    reg = [i for i in items if i.is_reg]
    if not reg:
        return items, stats
    target = sum(i.num_repeats for i in train)
    repeats = [0] * len(reg)
    n = 0
    first = True
    while n < target:
        for k, item in enumerate(reg):
            step = item.num_repeats if first else 1
            repeats[k] += step
            n += step
            if n >= target:
                break
        first = False
    used = [replace(item, num_repeats=r) for item, r in zip(reg, repeats) if r > 0]
    unused: dict[int, int] = {}
    for item, r in zip(reg, repeats):
        if r == 0:
            unused[item.subset_index] = unused.get(item.subset_index, 0) + 1
    if unused:
        out.warnings.append(f"{sum(unused.values())} regularisation images are not used: there are more than "
                            f"training images × repeats ({target})")
    if not train:
        out.warnings.append("a dataset has only regularisation images: they are not used")
        used = []
    stats = [replace(s, unused_reg=unused.get(s.subset_index, 0)) for s in stats]
    return train + used, stats


def scan_dataset(config: DatasetConfig, *, skip_bad_images: bool = False, strict: bool = True,
                 seed: int = 0) -> ScannedDataset:
    """Find every image and caption. With `strict`, any problem raises DataError listing them all;
    with `strict=False` (the plan) they are returned in `problems`. `seed` (the run's) picks the
    validation_split hold-out when a dataset has no validation_seed."""
    out = Collector(skip_bad_images)
    out.warnings.extend(config.notes)
    items: list[ImageItem] = []
    stats: list[SubsetStats] = []
    for spec in config.datasets:
        dataset_items, dataset_stats = _items_for_dataset(spec, out, seed)
        items.extend(dataset_items)
        stats.extend(dataset_stats)
    out.flush()
    if not items and not out.problems:
        out.problems.append("the dataset has no usable images")
    if out.held_out:
        out.warnings.append(f"{len(out.held_out)} image(s) held out of training by validation_split")
    result = ScannedDataset(config, tuple(items), tuple(stats), tuple(out.problems), tuple(out.warnings),
                            out.skipped, tuple(out.held_out), tuple(out.validation_items))
    if strict and result.problems:
        raise data_error(result)
    return result


def data_error(scanned: ScannedDataset) -> DataError:
    """A DataError listing the scan's problems (the first ones, then how many more)."""
    shown = list(scanned.problems[:LISTED])
    more = len(scanned.problems) - len(shown)
    text = "the dataset cannot be used:\n  " + "\n  ".join(shown) + (f"\n  ... and {more} more" if more else "")
    return DataError(text, hint="fix the files named above, then check again with `sdxl-tui plan`")
