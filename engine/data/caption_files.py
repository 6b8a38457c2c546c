"""Caption files beside images, read as sd-scripts reads them, and what is worth a warning.

sd-scripts (library/train_util.py, `read_caption`) opens the file in text mode and takes
`readlines()[0].strip()`: lines split on \\n, \\r and \\r\\n only. The other lines are used only
with `enable_wildcard`. Two choices differ, and are said in a warning when they matter:
- a file that starts with blank lines: sd-scripts trains on an empty caption; here the first
  non-blank line is used (the blank lines are almost always an editor's accident);
- a BOM is dropped (sd-scripts keeps U+FEFF in front of the first tag).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.storage.text import read_text, split_lines

# caption extensions other tools write, checked when caption_extension was left at its default
OTHER_CAPTION_EXTENSIONS = (".txt", ".caption", ".tags")


@dataclass(frozen=True)
class CaptionFile:
    """What a caption file holds."""
    caption: str  # the first non-blank line, stripped ("" when the file holds no text)
    extra_lines: int = 0  # non-blank lines after it (used by enable_wildcard)
    leading_blank_lines: int = 0  # blank lines before it
    lines: tuple[str, ...] = ()  # every non-blank line, stripped (what enable_wildcard draws from)


def read_caption_file(path: Path) -> CaptionFile:
    """The caption in a UTF-8 caption file (BOM accepted); DataError naming the file and the
    byte offset otherwise (engine/storage/text.py)."""
    lines = [line.strip() for line in split_lines(read_text(path, kind="data", what="caption file"))]
    filled = [i for i, line in enumerate(lines) if line]
    if not filled:
        return CaptionFile("")
    first = filled[0]
    return CaptionFile(lines[first], extra_lines=len(filled) - 1, leading_blank_lines=first,
                       lines=tuple(lines[i] for i in filled))


def multi_line_note(subset_index: int, files: list[Path]) -> str:
    """Said once per subset: the lines after the first are not trained on."""
    return (f"subset {subset_index}: {len(files)} caption file(s) have more than one line (e.g. {files[0]}); "
            "only the first line is used, as in sd-scripts; the other lines are for enable_wildcard = true")


def leading_blank_note(subset_index: int, files: list[Path]) -> str:
    """The warning for caption files that begin with blank lines (one line for the whole subset)."""
    return (f"subset {subset_index}: {len(files)} caption file(s) start with blank lines (e.g. {files[0]}); "
            "the first non-blank line is used (sd-scripts would train on an empty caption)")


def other_extension_note(subset_index: int, extension: str, found: list[Path]) -> str:
    """Caption files with another extension beside the images, none with the configured one."""
    suffixes = sorted({p.suffix for p in found})
    shown = ", ".join(str(p) for p in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
    return (f"subset {subset_index}: caption_extension is {extension!r} (the default) but the images have "
            f"{'/'.join(suffixes)} caption files beside them ({shown}); they are not read. "
            f"Set caption_extension = \"{suffixes[0]}\" in the dataset config to use them")


def captions_with_other_extension(images: list[Path], others: list[Path], extension: str) -> list[Path]:
    """Files in `others` named like an image with a caption extension other than `extension`."""
    stems = {p.stem for p in images}
    return [p for p in others
            if p.suffix.lower() in OTHER_CAPTION_EXTENSIONS and p.suffix.lower() != extension.lower()
            and p.stem in stems]
