"""Scanning one subset: its images, their sizes (file headers only) and captions, with every
problem and warning gathered in a Collector that the dataset scan (engine/data/scan.py) owns.

The user-facing choices (UTF-8 captions, first non-blank line, NFC/NFD names, class_tokens
fallback, non-recursive listing) are listed in engine/data/scan.py's docstring.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.data import caption_files
from engine.data.buckets import Size
from engine.data.caption_files import read_caption_file
from engine.data.dataset_config import SubsetSpec
from engine.data.folder_files import SubsetFiles, list_subset_files, normalisation_message, unsupported_message
from engine.data.image_files import IMAGE_EXTENSIONS, BadImage, read_image_size
from engine.errors import DataError

SIZE_READERS = 4
LISTED = 8  # per kind of warning, name this many files before summarising

Found = list[tuple[Path, str, Size]]  # (image, caption, (width, height)) per usable image


@dataclass
class Collector:
    """What a scan found wrong: problems (refuse the dataset), warnings, and grouped warnings
    (`flush` names the first LISTED of each kind, then counts the rest)."""
    skip_bad_images: bool
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    grouped: dict[str, list[str]] = field(default_factory=dict)
    skipped: int = 0
    held_out: list = field(default_factory=list)
    validation_items: list = field(default_factory=list)

    def group(self, kind: str, message: str) -> None:
        """Record a warning of `kind`; `flush` names the first LISTED of each kind and counts the rest."""
        self.grouped.setdefault(kind, []).append(message)

    def flush(self) -> None:
        """Turn the skipped-image count and the grouped warnings into `warnings` (call once, at the end)."""
        if self.skipped:
            self.warnings.append(f"{self.skipped} unreadable image(s) skipped (skip_bad_images = true); "
                                 "training goes on without them")
        for kind, messages in self.grouped.items():
            self.warnings.extend(messages[:LISTED])
            if len(messages) > LISTED:
                self.warnings.append(f"... and {len(messages) - LISTED} more: {kind}")


def _caption_for(image: Path, subset: SubsetSpec, files: SubsetFiles, out: Collector, stats: dict[str, int],
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


def _file_notes(subset: SubsetSpec, files: SubsetFiles, out: Collector, stats: dict[str, int]) -> None:
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


def scan_folder_subset(subset: SubsetSpec, out: Collector) -> tuple[Found, dict]:
    """A folder-style subset (image_dir): each readable image with its caption and (width, height) in
    pixels, and the counts (images, missing / empty / orphan captions, unreadable).

    Never raises for the data (the subset must have an image_dir): a missing or empty folder, a bad
    caption file or an unreadable image is a problem or a warning in `out`.
    """
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


def scan_metadata_subset(subset: SubsetSpec, out: Collector) -> tuple[Found, dict]:
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


def _checked_size(outcome: "Size | BadImage", out: Collector, stats: dict[str, int]) -> Optional[Size]:
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


def scan_subset(subset: SubsetSpec, out: Collector) -> tuple[Found, dict]:
    """The subset's usable images with captions and sizes, and its counts (images, missing_captions,
    empty_captions, orphan_captions, unreadable); problems and warnings go to `out`."""
    scan = scan_metadata_subset if subset.metadata_file is not None else scan_folder_subset
    return scan(subset, out)
