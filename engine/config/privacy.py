"""A config safe to share inside a LoRA file: no local paths.

sd-scripts stores base names in a LoRA's metadata (`ss_sd_model_name`, `ss_dataset_dirs`, subset
`image_dir`: train_network.py uses os.path.basename), never the folders of the person who trained
it. The embedded config does the same: every path option, and any other value that is an absolute
local path, keeps only its last component. The full config stays in the run's own `config.toml`.
"""
from __future__ import annotations

import ntpath
import posixpath
import re
from typing import Any

from engine.config.schema import PATH_OPTIONS, RunConfig

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def looks_like_local_path(value: str) -> bool:
    """Absolute POSIX or Windows paths, home-relative ones, and anything with a backslash."""
    return value.startswith(("/", "~")) or bool(_WINDOWS_ABSOLUTE.match(value)) or "\\" in value


def base_name(value: str) -> str:
    """The last component of a POSIX or Windows path ("" stays "")."""
    stripped = value.rstrip("/\\")
    return ntpath.basename(posixpath.basename(stripped)) or stripped


def _scrub(value: Any, is_path: bool) -> Any:
    if isinstance(value, str) and value and (looks_like_local_path(value) or (is_path and ("/" in value)
                                                                             and value.startswith("."))):
        return base_name(value)
    if isinstance(value, list):
        return [_scrub(item, is_path) for item in value]
    return value


def without_local_paths(cfg: RunConfig) -> RunConfig:
    """A copy of `cfg` whose path options (and any absolute path value) are base names.
    Hub ids (`owner/name`) stay whole: they name a public model, not a local folder."""
    data = cfg.model_dump()
    paths = set(PATH_OPTIONS)
    for section, values in data.items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            values[key] = _scrub(value, (section, key) in paths)
    return RunConfig.model_validate(data)
