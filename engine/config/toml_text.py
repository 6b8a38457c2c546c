"""Reading a TOML (or JSON) file a person wrote, with the two mistakes Windows paths cause
said plainly:

- `path = "C:\\Users\\me"` in double quotes: TOML reads `\\U` as an escape and the file does
  not parse. The error then says to use single quotes ('C:\\Users\\me') or forward slashes.
- `path = "C:\\temp\\new"` parses, but `\\t` and `\\n` became a tab and a newline. A path
  holding control characters is refused, named with the characters shown escaped (on one line).

No torch here (engine/config never imports it).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from engine.errors import ConfigError
from engine.storage.text import read_text

PATH_KEY = re.compile(r"(dir|path|file|config|weights|prompts|vae|model|ckpt)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
WINDOWS_PATH_HINT = ("write Windows paths in single quotes ('C:\\data\\set') or with forward slashes "
                     "(\"C:/data/set\"); inside double quotes a backslash starts an escape")


def read_config_text(path: Path | str, what: str = "config file") -> str:
    """UTF-8 text (BOM accepted) or a ConfigError naming the file and the byte offset."""
    return read_text(path, kind="config", what=what)


def parse_toml(text: str, path: str):
    """A tomlkit document; ConfigError with the line (and the Windows-path hint when the
    line has a backslash inside double quotes)."""
    import tomlkit
    from tomlkit.exceptions import ParseError

    try:
        return tomlkit.parse(text)
    except ParseError as exc:
        hint = "fix the syntax there (quotes, brackets, '=')"
        lines = text.splitlines()
        line = lines[exc.line - 1] if 0 < exc.line <= len(lines) else ""
        if re.search(r'"[^"]*\\[^"]*"?', line):
            hint = WINDOWS_PATH_HINT
        raise ConfigError(f"malformed TOML at line {exc.line}, column {exc.col}: {exc}", path=path,
                          line=exc.line, hint=hint) from None


def _strings(data: Any, where: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted location, key, value) for every string in nested tables/lists."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from (_strings(value, f"{where}.{key}" if where else str(key)) if not isinstance(value, str)
                        else [(f"{where}.{key}" if where else str(key), str(key), value)])
    elif isinstance(data, list):
        for index, value in enumerate(data):
            if isinstance(value, str):
                yield f"{where}[{index}]", where.rsplit(".", 1)[-1], value
            else:
                yield from _strings(value, f"{where}[{index}]")


def escaped(value: str) -> str:
    """The value on one line, control characters written as escapes (\\t, \\n, \\x07)."""
    table = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
    return "".join(table.get(c, f"\\x{ord(c):02x}") if _CONTROL.match(c) else c for c in value)


def check_path_strings(data: Any, path: str) -> None:
    """ConfigError for the first path-like value holding a control character."""
    for where, key, value in _strings(data):
        if PATH_KEY.search(key) and _CONTROL.search(value):
            names = sorted({{"\t": "tab", "\n": "newline", "\r": "carriage return"}.get(c, f"0x{ord(c):02x}")
                            for c in _CONTROL.findall(value)})
            raise ConfigError(f"{where} = \"{escaped(value)}\" holds control characters ({', '.join(names)}): "
                              f"a backslash escape in a double-quoted string (\\t, \\n, \\r...) turned into one",
                              path=path, key=where, hint=WINDOWS_PATH_HINT)
