"""Reading sd-scripts args TOMLs: the file, its flattened options, and paths made absolute.

Shared by the import (kohya_import) and the export (kohya_export) so neither needs the other.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from engine.errors import ConfigError


def flatten_args(doc: Mapping[str, Any]) -> dict[str, Any]:
    """sd-scripts' read_config_from_file: tables are flattened one level; later keys win."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    return flat



def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"file not found: {p}", path=str(p), hint="check the path")
    from engine.config.toml_text import check_path_strings, parse_toml, read_config_text

    data = parse_toml(read_config_text(p, "args TOML"), str(p)).unwrap()
    check_path_strings(data, str(p))
    return data



def absolutise_paths(doc: Any, base: Path) -> None:
    """image_dir / metadata_file relative to the TOML's folder -> absolute (sd-scripts would
    read them relative to its working directory)."""
    for dataset in doc.get("datasets", []):
        for subset in dataset.get("subsets", []):
            for key in ("image_dir", "metadata_file"):
                raw = subset.get(key)
                if isinstance(raw, str) and raw and not Path(raw).expanduser().is_absolute():
                    near, cwd = base / raw, Path.cwd() / raw
                    subset[key] = str((cwd if not near.exists() and cwd.exists() else near).resolve())
