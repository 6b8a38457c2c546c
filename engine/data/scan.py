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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from engine.data import caption_files
from engine.data.buckets import Bucketer, Size
from engine.data.caption_files import read_caption_file
from engine.data.dataset_config import DatasetConfig, DatasetSpec, SubsetSpec
from engine.data.folder_files import SubsetFiles, list_subset_files, normalisation_message, unsupported_message
from engine.data.image_files import IMAGE_EXTENSIONS, BadImage, read_image_size
from engine.data.validation_split import split_for_validation
from engine.errors import DataError

UPSCALE_WARNING = 2.0  # warn when an image must be enlarged this much (linear) to fill its bucket
SIZE_READERS = 4
LISTED = 8  # per kind of warning, name this many files before summarising


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


# --- scanning -------------------------------------------------------------------------

@dataclass
class _Collector:
    skip_bad_images: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    grouped: dict[str, list[str]] = field(default_factory=dict)
    skipped: int = 0
    held_out: list = field(default_factory=list)
    validation_items: list = field(default_factory=list)

    def group(self, kind: str, message: str) -> None:
        self.grouped.setdefault(kind, []).append(message)

    def flush(self) -> None:
        if self.skipped:
            self.warnings.append(f"{self.skipped} unreadable image(s) skipped (skip_bad_images = true); "
                                 "training goes on without them")
        for kind, messages in self.grouped.items():
            self.warnings.extend(messages[:LISTED])
            if len(messages) > LISTED:
                self.warnings.append(f"... and {len(messages) - LISTED} more: {kind}")


def _caption_for(image: Path, subset: SubsetSpec, files: SubsetFiles, out: _Collector, stats: dict[str, int],
                 notes: dict[str, list[Path]]) -> str:
    cap_path = files.caption_of(image) or image.parent / (image.stem + subset.caption_extension)
    caption = None
    if cap_path.is_file():
        try:
            read = read_caption_file(cap_path)
        except DataError as exc:
            out.problems.append(exc.message + " → " + exc.hint)
            return ""
        # enable_wildcard draws one line per step, so it keeps them all (newline-joined, as sd-scripts)
        caption = "\n".join(read.lines) if subset.enable_wildcard else read.caption
        if read.extra_lines and not subset.enable_wildcard:
            notes["multi"].append(cap_path)
        if read.leading_blank_lines and caption:
            notes["leading"].append(cap_path)
        if not caption:
            stats["empty_captions"] += 1
            out.group("blank captions", f"{cap_path}: caption is blank; using class_tokens "
                                        f"{subset.class_tokens!r}" if subset.class_tokens else
                      f"{cap_path}: caption is blank and the subset has no class_tokens (empty caption)")
    else:
        stats["missing_captions"] += 1
        out.group("missing captions", f"{image}: no caption file {cap_path.name}; using class_tokens "
                                      f"{subset.class_tokens!r}" if subset.class_tokens else
                  f"{image}: no caption file {cap_path.name} and the subset has no class_tokens (empty caption)")
    return caption or (subset.class_tokens or "")


def _file_notes(subset: SubsetSpec, files: SubsetFiles, out: _Collector, stats: dict[str, int]) -> None:
    """Files beside the images that are not used as they stand, each named."""

    for other in files.orphans:
        stats["orphan_captions"] += 1
        out.group("captions without an image", f"{other}: caption file without a matching image")
    for caption, image in files.unsupported:
        stats["orphan_captions"] += 1
        out.group("images in a format not trained on", unsupported_message(caption, image))
    for image, caption in files.normalisation:
        out.group("names in other Unicode forms", normalisation_message(image, caption))
    if subset.origin("caption_extension") == "default":
        elsewhere = caption_files.captions_with_other_extension(files.images, files.others, subset.caption_extension)
        if elsewhere:
            out.warnings.append(caption_files.other_extension_note(subset.index, subset.caption_extension, elsewhere))


def _scan_folder_subset(subset: SubsetSpec, out: _Collector) -> tuple[list[tuple[Path, str, Size]], dict]:
    stats = dict(images=0, missing_captions=0, empty_captions=0, orphan_captions=0, unreadable=0)
    folder = subset.image_dir
    assert folder is not None
    if not folder.is_dir():
        out.problems.append(f"{folder}: image folder not found (subset {subset.index}, image_dir)")
        return [], stats
    files = list_subset_files(folder, subset.caption_extension)
    if not files.images:
        out.problems.append(f"{folder}: no images ({' '.join(IMAGE_EXTENSIONS)}) in the folder")
        return [], stats
    _file_notes(subset, files, out, stats)
    found = []
    notes: dict[str, list[Path]] = {"multi": [], "leading": []}
    for image, outcome in zip(files.images, _read_sizes(files.images)):
        size = _checked_size(outcome, out, stats)
        if size is None:
            continue
        found.append((image, _caption_for(image, subset, files, out, stats, notes), size))
    if notes["multi"]:
        out.warnings.append(caption_files.multi_line_note(subset.index, notes["multi"]))
    if notes["leading"]:
        out.warnings.append(caption_files.leading_blank_note(subset.index, notes["leading"]))
    stats["images"] = len(found)
    return found, stats


def _scan_metadata_subset(subset: SubsetSpec, out: _Collector) -> tuple[list[tuple[Path, str, Size]], dict]:
    """Fine-tuning style: a JSON of {image key: {"caption": ..., "tags": ...}}."""
    stats = dict(images=0, missing_captions=0, empty_captions=0, orphan_captions=0, unreadable=0)
    meta_path = subset.metadata_file
    assert meta_path is not None
    from engine.storage.text import read_text

    try:
        metadata = json.loads(read_text(meta_path, kind="data", what="metadata_file"))
    except FileNotFoundError:
        out.problems.append(f"{meta_path}: metadata_file not found")
        return [], stats
    except DataError as exc:
        out.problems.append(f"{exc.message} → {exc.hint}")
        return [], stats
    except json.JSONDecodeError as exc:
        out.problems.append(f"{meta_path}: metadata_file is not valid JSON ({exc})")
        return [], stats
    if not isinstance(metadata, dict) or not metadata:
        out.problems.append(f"{meta_path}: metadata_file has no images")
        return [], stats
    found = []
    for key, entry in metadata.items():
        image = _metadata_image_path(key, subset)
        if image is None:
            out.problems.append(f"{meta_path}: image '{key}' not found")
            continue
        size = _checked_size(_try_size(image), out, stats)
        if size is None:
            continue
        entry = entry if isinstance(entry, dict) else {}
        caption, tags = entry.get("caption"), entry.get("tags")
        text = ", ".join(str(p).strip() for p in (caption, tags) if p and str(p).strip())
        if not text:
            stats["missing_captions"] += 1
            out.group("missing captions", f"{meta_path}: '{key}' has no caption or tags")
            text = subset.class_tokens or ""
        found.append((image, text, size))
    stats["images"] = len(found)
    return found, stats


def _metadata_image_path(key: str, subset: SubsetSpec) -> Optional[Path]:
    bases = [subset.image_dir] if subset.image_dir is not None else [subset.metadata_file.parent]  # type: ignore[union-attr]
    candidates = [Path(key)] + [b / key for b in bases]
    candidates += [b / (key + ext) for b in bases for ext in IMAGE_EXTENSIONS]
    return next((c for c in candidates if c.is_file()), None)


def _try_size(image: Path) -> "Size | BadImage":
    try:
        return read_image_size(image)
    except BadImage as exc:
        return exc


def _read_sizes(images: list[Path]) -> list["Size | BadImage"]:
    """Header reads are I/O-bound (network drives, cold disks): a few threads, order kept."""
    if len(images) < 16:
        return [_try_size(p) for p in images]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=SIZE_READERS) as pool:
        return list(pool.map(_try_size, images))


def _checked_size(outcome: "Size | BadImage", out: _Collector, stats: dict[str, int]) -> Optional[Size]:
    if isinstance(outcome, BadImage):
        exc = outcome
        stats["unreadable"] += 1
        if out.skip_bad_images:
            out.skipped += 1
            out.group("unreadable images skipped", f"skipped {exc}")
        else:
            out.problems.append(f"{exc} → fix or remove it, or set skip_bad_images = true")
        return None
    return outcome


def _items_for_dataset(spec: DatasetSpec, out: _Collector, seed: int) -> tuple[list[ImageItem], list[SubsetStats]]:
    bucketer = Bucketer.for_dataset(spec)
    items: list[ImageItem] = []
    all_stats: list[SubsetStats] = []
    for subset in spec.subsets:
        scan = _scan_metadata_subset if subset.metadata_file is not None else _scan_folder_subset
        found, stats = scan(subset, out)
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
                 out: _Collector) -> tuple[list[ImageItem], list[SubsetStats]]:
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
    out = _Collector(skip_bad_images)
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
