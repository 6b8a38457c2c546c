"""The one `key=value` parser: network_args, optimizer_args and `--set` all read their entries
here (sd-scripts writes them as "key=value" strings, e.g. network_args = ["conv_dim=4"])."""
from __future__ import annotations

from typing import Callable, Iterable, Optional

from engine.errors import ConfigError


def pair_key(item: str) -> str:
    """The key of one "key=value" entry (the whole entry, stripped, when it has no "=")."""
    return item.partition("=")[0].strip()


def parse_pairs(items: Iterable[str], error: Optional[Callable[[str], ConfigError]] = None) -> dict[str, str]:
    """"key=value" entries as {key: value}, both stripped, the last one winning for a repeated key.
    An entry without "=" raises `error(entry)` when `error` is given, else maps to ""."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item and error is not None:
            raise error(item)
        key, _, value = item.partition("=")
        out[key.strip()] = value.strip()
    return out
