"""RunConfig <-> TOML, with comments that survive and errors that point at lines.

Written files carry each field's help as a comment; a file a user edited keeps its own
comments when the wizard or `--set` changes values, because edits go into the parsed
tomlkit document rather than a fresh one.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

import tomlkit
from pydantic import ValidationError
from tomlkit.exceptions import ParseError

from engine.config.names import nearest
from engine.config.schema import SCHEMA_VERSION, SECTIONS, RunConfig, help_for
from engine.errors import ConfigError

# schema_version N -> function upgrading a raw dict from N to N + 1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Bring a config's raw data up to SCHEMA_VERSION, one migration a version. Raises ConfigError for a newer
    schema_version."""
    version = int(data.get("schema_version", SCHEMA_VERSION))
    if version > SCHEMA_VERSION:
        raise ConfigError(f"schema_version {version} is newer than this sdxl-tui understands ({SCHEMA_VERSION})",
                          key="schema_version", hint="upgrade sdxl-tui")
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["schema_version"] = version
    return data


def find_line(text: str, section: str | None, key: str) -> int | None:
    """1-based line of `key = ` inside `[section]` (top level when section is None)."""
    current: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[\s*([^\]\s]+)\s*\]", line)
        if header:
            current = header.group(1)
            continue
        if current == section and re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line):
            return number
    if section is not None and key == "":
        return None
    return None


def parse_document(text: str, path: str = "<string>") -> tomlkit.TOMLDocument:
    """Parse TOML text, keeping comments; a syntax error is a ConfigError with `path` and the line."""
    from engine.config.toml_text import parse_toml

    return parse_toml(text, path)


def config_from_document(doc: tomlkit.TOMLDocument, text: str, path: str = "<string>") -> RunConfig:
    """The RunConfig a parsed document holds (migrated, path strings checked). Raises ConfigError for an unknown
    section or key (with the nearest valid name) or a bad value, with its line in `text`."""
    from engine.config.toml_text import check_path_strings

    data = migrate(doc.unwrap())
    check_path_strings(data, path)
    for top_key, value in data.items():
        if top_key == "schema_version":
            continue
        if top_key not in SECTIONS:
            raise ConfigError(f"unknown section or key '{top_key}'", key=top_key, path=path,
                              line=find_line(text, None, top_key) or _header_line(text, top_key),
                              hint=nearest(top_key, list(SECTIONS)))
        if not isinstance(value, dict):
            raise ConfigError(f"'{top_key}' must be a table [{top_key}]", key=top_key, path=path)
        valid = list(SECTIONS[top_key].model_fields)
        for key in value:
            if key not in valid:
                raise ConfigError(f"unknown key '{key}' in [{top_key}]", key=f"{top_key}.{key}", path=path,
                                  line=find_line(text, top_key, key), hint=nearest(key, valid))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise _validation_to_config_error(exc, text, path) from None


def _header_line(text: str, section: str) -> int | None:
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"^\s*\[\s*{re.escape(section)}\s*\]", line):
            return number
    return None


def _validation_to_config_error(exc: ValidationError, text: str, path: str) -> ConfigError:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    section = loc[0] if len(loc) > 1 else None
    key = loc[1] if len(loc) > 1 else loc[0]
    dotted = ".".join(loc)
    got = first.get("input")
    message = f"{dotted}: {first['msg']} (got {got!r})"
    hint = help_for(section, key) if section in SECTIONS and key in SECTIONS[section].model_fields else ""
    return ConfigError(message, key=dotted, path=path, line=find_line(text, section, key), hint=hint)


def load_config(path: str | Path) -> RunConfig:
    """Read a run config TOML. Raises ConfigError (missing file, bad TOML, unknown key, bad value)."""
    return load_config_with_document(path)[0]


def load_config_with_document(path: str | Path) -> tuple[RunConfig, tomlkit.TOMLDocument]:
    """Read a run config TOML and keep its document, so saving it again keeps its comments. Raises ConfigError as
    load_config."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}", path=str(p),
                          hint="check the path, or create one with `sdxl-tui` (the wizard) or from a preset in "
                               "sdxl_tui/templates/ (listed by the wizard)")
    from engine.config.toml_text import read_config_text

    text = read_config_text(p, "run config")
    doc = parse_document(text, str(p))
    return config_from_document(doc, text, str(p)), doc


def loads_config(text: str) -> RunConfig:
    """A RunConfig from TOML text. Raises ConfigError as load_config."""
    return config_from_document(parse_document(text), text)


def _comment_lines(text: str) -> list[str]:
    return [f"# {part}" for part in text.split("\n")]


def _default_note(section: str, key: str) -> str:
    default = SECTIONS[section].model_fields[key].get_default(call_default_factory=True)
    if default is None:
        return " (default: unset)"
    return f" (default: {tomlkit.item(default).as_string()})"


def _fresh_document(cfg: RunConfig) -> tomlkit.TOMLDocument:
    doc = tomlkit.document()
    doc.add(tomlkit.comment("sdxl-tui run config. Every key is an sd-scripts option name where one exists."))
    doc.add(tomlkit.comment("Replay it with: sdxl-tui train <this file>"))
    doc.add("schema_version", cfg.schema_version)
    for section in SECTIONS:
        table = tomlkit.table()
        values = getattr(cfg, section).model_dump()
        for key, value in values.items():
            table.add(tomlkit.comment(f"{key}: {help_for(section, key)}{_default_note(section, key)}"))
            if value is None:
                table.add(tomlkit.comment(f"{key} =   (unset)"))
            else:
                table.add(key, value)
        doc.add(tomlkit.nl())
        doc.add(section, table)
    return doc


def to_document(cfg: RunConfig, base: tomlkit.TOMLDocument | None = None) -> tomlkit.TOMLDocument:
    """The config as a TOML document; edits `base` in place when given so its comments survive."""
    if base is None:
        return _fresh_document(cfg)
    base["schema_version"] = cfg.schema_version
    for section in SECTIONS:
        values = getattr(cfg, section).model_dump()
        if section not in base:
            base.add(section, tomlkit.table())
        table = base[section]
        for key, value in values.items():
            if value is None:
                if key in table:
                    del table[key]
            elif key not in table or table[key] != value:
                if key not in table:
                    table.add(tomlkit.comment(f"{key}: {help_for(section, key)}"))
                table[key] = value
    return base


def dumps_config(cfg: RunConfig, base: tomlkit.TOMLDocument | None = None) -> str:
    """The config as TOML text, written into `base` (a loaded document) so its comments and order survive."""
    return tomlkit.dumps(to_document(cfg, base))


def save_config(cfg: RunConfig, path: str | Path, base: tomlkit.TOMLDocument | None = None) -> Path:
    """Write the config TOML atomically (temp file, then rename); returns the path written. Raises OSError."""
    from engine.storage.atomic import atomic_write_text

    return atomic_write_text(Path(path), dumps_config(cfg, base))


def parse_set_value(raw: str) -> Any:
    """`--set key=value`: the value as a TOML value, bare words taken as strings."""
    try:
        value = tomlkit.parse(f"v = {raw}")["v"]
        return value.unwrap() if hasattr(value, "unwrap") else value
    except ParseError:
        return raw


UNSET_WORDS = ("none", "null")


def unset_value(name: str) -> Any:
    """`--set KEY=none`: None for an optional option, "" for a text one whose default is "" (both
    mean "off" there); a ConfigError for an option that always has a value."""
    from engine.config.schema import locate

    section, key = locate(name)
    info = SECTIONS[section].model_fields[key]
    annotation = str(info.annotation)
    if "None" in annotation or "Optional" in annotation:
        return None
    if info.default == "":
        return ""
    raise ConfigError(f"--set {name}=none: {key} always has a value (default {info.default!r})", key=key,
                      hint=f"give it a value, e.g. --set {key}={info.default!r}")


def apply_sets(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """`cfg` with `--set key=value` applied (values as TOML, bare words as strings; `none` unsets)."""
    from engine.config.key_value import parse_pairs

    pairs = parse_pairs(assignments, lambda item: ConfigError(f"--set needs key=value, got '{item}'",
                                                              hint="e.g. --set network_dim=8"))
    flat: dict[str, Any] = {}
    for key, raw in pairs.items():
        # a bare word only: '"none"' stays the string
        flat[key] = unset_value(key) if raw.lower() in UNSET_WORDS else parse_set_value(raw)
    try:
        return cfg.with_values(**flat)
    except ValidationError as exc:
        raise _validation_to_config_error(exc, "", "--set") from None
