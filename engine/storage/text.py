"""Reading a text file a person wrote: captions, prompt files, dataset and run TOML/JSON.

One rule for all of them: UTF-8, with or without a byte-order mark. Anything else is
refused with the file's name and the offset of the first byte that is not UTF-8, rather
than guessed at (a wrong guess trains on mojibake). Captions and dataset files are data
(DataError, exit 65); run configs and prompt files are config (ConfigError, exit 78).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from engine.errors import ConfigError, DataError

Kind = Literal["data", "config"]


def decode_text(raw: bytes, path: Path | str, *, kind: Kind = "data", what: str = "file") -> str:
    """`raw` as text (a leading UTF-8 BOM dropped); DataError (kind "data") or ConfigError
    (kind "config") naming `path` and the byte offset of the first non-UTF-8 byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bom = _other_bom(raw)
        found = f" (it starts with a {bom} byte-order mark)" if bom else ""
        message = (f"{path}: {what} is not UTF-8 text{found}: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                   f"is not valid UTF-8")
        hint = "re-save the file as UTF-8 (with or without BOM), e.g. in your editor's 'Save with encoding'"
        if kind == "config":
            raise ConfigError(message, hint=hint) from None
        raise DataError(message, hint=hint) from None


def read_text(path: Path | str, *, kind: Kind = "data", what: str = "file") -> str:
    """The file's text (see `decode_text`); OSError (missing, unreadable) is left to the caller."""
    return decode_text(Path(path).read_bytes(), path, kind=kind, what=what)


def _other_bom(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return "UTF-32"
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    return ""


def split_lines(text: str) -> list[str]:
    """Lines split on \\r\\n, \\r and \\n only, as Python's text-mode `readlines()` (which
    sd-scripts uses for captions) splits them; `str.splitlines` would also split on form
    feeds, \\x1c..\\x1e, U+0085, U+2028 and U+2029, which may stand inside a caption."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
