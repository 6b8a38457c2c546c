"""The dataset TOML an imported sd-scripts config trains from.

Two cases, as sd-scripts reads them:
- a dataset TOML is given: the args' dataset options (resolution, caption_extension, ...) sit
  beneath its [general] table, so a copy is written with them added where [general] lacks them;
- no dataset TOML, but `train_data_dir` (and maybe `reg_data_dir`, `in_json`): sd-scripts builds
  the dataset from the folders (engine/data/folder_dataset.py); the same dataset is written as a
  TOML with the args' dataset options in [general].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from engine.config.schema import RunConfig
from engine.errors import ConfigError


def _need_path(merged_dataset_path: Optional[str | Path], why: str) -> Path:
    if merged_dataset_path is None:
        raise ConfigError(f"{why}: a dataset TOML must be written",
                          hint="give a place for it (import-kohya writes it beside -o)")
    return Path(merged_dataset_path)


def place_dataset_values(cfg: RunConfig, defaults: Mapping[str, Any], folders: Mapping[str, str],
                         merged_dataset_path: Optional[str | Path],
                         merge: Callable[[Path, Mapping[str, Any], Path], Path]) -> tuple[RunConfig, list[str]]:
    """(config pointing at the dataset TOML to train from, messages saying what was written).
    `merge` writes a dataset TOML's copy with the defaults in [general] (kohya_import.merge_dataset_defaults).

    Raises ConfigError when the dataset TOML or a folder is missing, or a folder-style dataset
    has no `<repeats>_<class tokens>` subfolder.
    """
    from engine.data.folder_dataset import scan_folder_dataset, write_dataset_toml

    source = cfg.dataset.dataset_config
    messages: list[str] = []
    if source:
        ignored = [k for k in ("train_data_dir", "reg_data_dir", "in_json") if folders.get(k)]
        if ignored:
            messages.append(f"{', '.join(ignored)} not used: a dataset TOML is given, and sd-scripts then ignores them")
        if not defaults:
            return cfg, messages
        if not Path(source).is_file():
            raise ConfigError(f"dataset config not found: {source}", key="dataset_config",
                              hint="pass the right file with --dataset-config")
        out = _need_path(merged_dataset_path, "this args file sets dataset defaults")
        written = merge(Path(source), defaults, out)
        messages.append(f"wrote {written}: {source} with the args file's dataset defaults "
                        f"({', '.join(defaults)}) in [general]")
        return cfg.with_values(dataset_config=str(Path(written).resolve())), messages
    if not folders.get("train_data_dir"):
        return cfg, messages
    found = scan_folder_dataset(folders["train_data_dir"], folders.get("reg_data_dir"), folders.get("in_json"))
    out = _need_path(merged_dataset_path, "folder-style dataset (train_data_dir)")
    written = write_dataset_toml(found, out, defaults)
    messages += [f"warning: {w}" for w in found.warnings]
    messages.append(f"wrote {written}: the dataset sd-scripts builds from {folders['train_data_dir']} "
                    f"({len(found.subsets)} subsets):")
    messages += [f"  {line}" for line in found.summary()]
    return cfg.with_values(dataset_config=str(Path(written).resolve())), messages
