"""Folder-style datasets: sd-scripts' `train_data_dir` / `reg_data_dir` / `in_json` without a dataset TOML.

sd-scripts (train_network.py, `library/config_util.py: generate_dreambooth_subsets_config_by_subdirs`)
builds one dataset from the command line when `--dataset_config` is absent:
- DreamBooth form (no `in_json`): every subfolder of `train_data_dir` named `<repeats>_<class tokens>`
  is a subset with `num_repeats = repeats` and `class_tokens` = the rest of the name (underscores
  after the first kept); subfolders of `reg_data_dir` are the same with `is_reg = true`. A subfolder
  whose name does not start with a number, or whose number is below 1, is skipped with a warning.
- Fine-tuning form (`in_json` given): one subset `image_dir = train_data_dir`, `metadata_file = in_json`;
  `reg_data_dir` is not used.
Resolution, buckets and caption options come from the command line (the args), which here become
the generated TOML's `[general]` table, so the dataset loader reads them exactly as from a user's TOML.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from engine.errors import ConfigError

_PREFIX = re.compile(r"^(\d+)_")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".avif", ".jxl"}


@dataclass(frozen=True)
class FolderSubset:
    """One `<repeats>_<class tokens>` subfolder (or the fine-tuning folder with its metadata file)."""
    image_dir: Path
    num_repeats: int
    class_tokens: str
    is_reg: bool = False
    metadata_file: Optional[Path] = None


@dataclass
class FolderDataset:
    """The subsets sd-scripts would build, and the subfolders it would skip (with the fix)."""
    subsets: list[FolderSubset] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """One line per subset: `image_dir  x<repeats>  "class tokens"  (reg)`."""
        lines = []
        for s in self.subsets:
            if s.metadata_file is not None:
                lines.append(f"{s.image_dir}  captions from {s.metadata_file}")
            else:
                lines.append(f"{s.image_dir}  x{s.num_repeats}  class_tokens {s.class_tokens!r}"
                             + ("  (regularisation)" if s.is_reg else ""))
        return lines


def parse_subfolder_name(name: str) -> tuple[int, str] | None:
    """`"20_ohwx woman"` -> (20, "ohwx woman"); None without a number prefix (sd-scripts splits on
    "_" and reads the first part as the repeat count)."""
    head, _, rest = name.partition("_")
    try:
        repeats = int(head)
    except ValueError:
        return None
    return repeats, rest


def looks_like_folder_dataset(folder: Path) -> bool:
    """True when `folder` holds at least one `<number>_<name>` subfolder (the wizard's cue)."""
    folder = Path(folder).expanduser()
    return folder.is_dir() and any(p.is_dir() and _PREFIX.match(p.name) for p in folder.iterdir())


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES for p in folder.iterdir())


def _subfolders(root: Path, key: str, is_reg: bool, out: FolderDataset) -> None:
    if not root.is_dir():
        raise ConfigError(f"{key}: folder not found: {root}", key=key,
                          hint=f"give the folder that holds the <repeats>_<class tokens> subfolders as {key}")
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        parsed = parse_subfolder_name(sub.name)
        if parsed is None:
            out.warnings.append(f"{key}: subfolder {sub.name!r} is skipped (sd-scripts ignores a folder without "
                                f"a repeat count): rename it to <repeats>_<class tokens>, e.g. '10_{sub.name}'")
            continue
        repeats, tokens = parsed
        if repeats < 1:
            out.warnings.append(f"{key}: subfolder {sub.name!r} is skipped (0 repeats: sd-scripts ignores it): "
                                f"rename it with a count of 1 or more, e.g. '1_{tokens}'")
            continue
        out.subsets.append(FolderSubset(sub.resolve(), repeats, tokens, is_reg))


def scan_folder_dataset(train_data_dir: str | Path, reg_data_dir: str | Path | None = None,
                        in_json: str | Path | None = None) -> FolderDataset:
    """The subsets sd-scripts builds from these folders (no images are read here).

    Raises ConfigError when a folder is missing, or when `train_data_dir` yields no subset (the
    message names the folder and what a DreamBooth-style folder looks like).
    """
    train = Path(train_data_dir).expanduser()
    out = FolderDataset()
    if in_json:
        meta = Path(in_json).expanduser()
        if not train.is_dir():
            raise ConfigError(f"train_data_dir: folder not found: {train}", key="train_data_dir",
                              hint="give the folder with the images the in_json metadata names")
        if not meta.is_file():
            raise ConfigError(f"in_json: metadata file not found: {meta}", key="in_json",
                              hint="give the JSON written by sd-scripts' merge_captions_to_metadata.py")
        out.subsets.append(FolderSubset(train.resolve(), 1, "", False, meta.resolve()))
        if reg_data_dir:
            out.warnings.append("reg_data_dir is not used with in_json (sd-scripts' fine-tuning form has no "
                                "regularisation images): remove it, or drop in_json for the DreamBooth form")
        return out
    _subfolders(train, "train_data_dir", False, out)
    train_subsets = len(out.subsets)
    if reg_data_dir:
        _subfolders(Path(reg_data_dir).expanduser(), "reg_data_dir", True, out)
    if train_subsets == 0:
        direct = (" It holds images directly: move them into a subfolder such as '10_name'."
                  if _has_images(train) else "")
        raise ConfigError(f"train_data_dir: no <repeats>_<class tokens> subfolder in {train}.{direct}",
                          key="train_data_dir",
                          hint="train_data_dir is the parent of folders named like '20_ohwx woman' (20 repeats, "
                               "class tokens 'ohwx woman'), or pass a dataset TOML with --dataset-config")
    return out


def dataset_document(folders: FolderDataset, general: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The dataset TOML (as a dict) equal to what sd-scripts builds: `general` (the args' dataset
    options such as resolution, enable_bucket, caption_extension) plus one dataset of the subsets."""
    subsets: list[dict[str, Any]] = []
    for s in folders.subsets:
        entry: dict[str, Any] = {"image_dir": s.image_dir.as_posix()}
        if s.metadata_file is not None:
            entry["metadata_file"] = s.metadata_file.as_posix()
        else:
            entry.update(num_repeats=s.num_repeats, class_tokens=s.class_tokens)
            if s.is_reg:
                entry["is_reg"] = True
        subsets.append(entry)
    doc: dict[str, Any] = {}
    if general:
        doc["general"] = dict(general)
    doc["datasets"] = [{"subsets": subsets}]
    return doc


def write_dataset_toml(folders: FolderDataset, path: str | Path,
                       general: Optional[Mapping[str, Any]] = None) -> Path:
    """Write `dataset_document` as TOML, atomically; returns the path."""
    import tomlkit

    from engine.storage.atomic import atomic_write_text

    text = "# sd-scripts dataset TOML built from a folder-style dataset (train_data_dir / reg_data_dir)\n"
    return atomic_write_text(Path(path), text + tomlkit.dumps(dataset_document(folders, general)))
