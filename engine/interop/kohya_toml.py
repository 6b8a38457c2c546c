"""Reading sd-scripts args TOMLs: the file, its flattened options, and paths made absolute.

Shared by the import (kohya_import) and the export (kohya_export) so neither needs the other.
"""
from __future__ import annotations

from dataclasses import dataclass
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
    """The data of an sd-scripts TOML file (args or dataset). Raises ConfigError for a missing file, bad TOML or a
    malformed path string."""
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


@dataclass(frozen=True)
class Reading:
    """How a TOML file reads: "ours" (sdxl-tui's run config), "kohya" (sd-scripts' args TOML)
    or "neither" (`why` then says what each reading found)."""

    kind: str
    why: str = ""


def our_reading_problem(doc: Mapping[str, Any]) -> str:
    """What stops `doc` being an sdxl-tui run config by its shape ("" when nothing does)."""
    from engine.config.schema import SECTIONS

    for key, value in doc.items():
        if key == "schema_version":
            continue
        if key not in SECTIONS:
            return f"unknown section '{key}'"
        if not isinstance(value, Mapping):
            return f"'{key}' is not a table"
        unknown = [k for k in value if k not in SECTIONS[key].model_fields]
        if unknown:
            return f"unknown key '{unknown[0]}' in [{key}]"
    return ""


def choose_reading(doc: Mapping[str, Any], known_args_keys: set[str]) -> Reading:
    """By content, not section names (sd-scripts flattens its tables; their names are decoration).
    Our files carry schema_version; without it, a file that is a valid run config by shape is
    ours; one whose keys are all sd-scripts options is an args TOML, and so is one with some
    sd-scripts options and none of our section names (a misspelt key is then noted by the import,
    as sd-scripts ignores it). A file with our section names, keys our schema lacks and keys
    sd-scripts lacks could be either: "neither", with both readings' findings."""
    if "schema_version" in doc:
        return Reading("ours")
    problem = our_reading_problem(doc)
    if not problem:
        return Reading("ours")
    from engine.config.schema import SECTIONS

    flat = flatten_args(doc)
    unknown = [key for key in flat if key not in known_args_keys]
    if len(unknown) == len(flat):
        return Reading("ours")  # nothing sd-scripts-like in it: our reading's error is the one to show
    has_our_sections = any(key in SECTIONS and isinstance(value, Mapping) for key, value in doc.items())
    if not unknown or not has_our_sections:
        return Reading("kohya")
    names = ", ".join(repr(k) for k in unknown[:5])
    return Reading("neither", f"read as an sdxl-tui config: {problem}; read as an sd-scripts args TOML: {names} "
                              + ("is not an sd-scripts option" if len(unknown) == 1 else "are not sd-scripts options"))
