"""One subset folder's files: its images, the caption file of each, and the files that look
like they belong to training but are not used (each said once, by name).

Names are compared in Unicode NFC: macOS writes file names decomposed (NFD), so "café.png"
and a "café.txt" typed on another system look the same but differ byte for byte. They are
matched, with one note, instead of reported twice ("no caption" and "caption without an image")
under names that look identical.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from engine.data.image_files import IMAGE_EXTENSIONS, UNSUPPORTED_IMAGE_EXTENSIONS


def nfc(text: str) -> str:
    """`text` in Unicode NFC form, so names written as NFD (macOS) match."""
    return unicodedata.normalize("NFC", text)


@dataclass
class SubsetFiles:
    """One subset folder's files sorted out: images, caption files by image stem, and what matches nothing."""
    images: list[Path] = field(default_factory=list)
    others: list[Path] = field(default_factory=list)
    captions: dict[str, Path] = field(default_factory=dict)  # NFC image stem -> its caption file
    orphans: list[Path] = field(default_factory=list)  # caption files no image claims
    unsupported: list[tuple[Path, Path]] = field(default_factory=list)  # (caption, its image in another format)
    normalisation: list[tuple[Path, Path]] = field(default_factory=list)  # (image, caption) named in other forms

    def caption_of(self, image: Path) -> Optional[Path]:
        """The caption file of `image`, or None."""
        return self.captions.get(nfc(image.stem))


def list_subset_files(folder: Path, caption_extension: str) -> SubsetFiles:
    """Non-recursive, extensions case-insensitive, dot-files ignored."""
    out = SubsetFiles()
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (out.images if p.suffix.lower() in IMAGE_EXTENSIONS else out.others).append(p)
    image_stems = {nfc(p.stem): p for p in out.images}
    unsupported = {nfc(p.stem): p for p in out.others if p.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS}
    ext = caption_extension
    for other in out.others:
        if not ext or not other.name.endswith(ext) or other.suffix.lower() in UNSUPPORTED_IMAGE_EXTENSIONS:
            continue
        stem = nfc(other.name[: -len(ext)])
        image = image_stems.get(stem)
        if image is not None:
            out.captions[stem] = other
            if image.stem != other.name[: -len(ext)]:
                out.normalisation.append((image, other))
        elif stem in unsupported:
            out.unsupported.append((other, unsupported[stem]))
        else:
            out.orphans.append(other)
    return out


def unsupported_message(caption: Path, image: Path) -> str:
    """The problem text for a caption whose image is in a format that is not trained on."""
    return (f"{caption}: its image {image.name} is a {image.suffix.lower()} file, a format sdxl-tui (like "
            f"sd-scripts) does not train on; convert it to PNG or JPEG ({' '.join(IMAGE_EXTENSIONS)})")


def normalisation_message(image: Path, caption: Path) -> str:
    """The note for an image and caption whose names differ only in Unicode form."""
    return (f"{caption}: its name and its image's ({image.name}) are the same text in different Unicode forms "
            f"(NFC/NFD, as macOS and other systems write names); matched to the image")
