"""`sdxl-tui options`: every config option, its section, default, allowed values and help."""
from __future__ import annotations

import argparse
import typing


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui options`: an optional name filter."""
    parser.add_argument("filter", nargs="?", default="", help="show only options whose name contains this")


def allowed_values(info) -> str:
    """The choices (a Literal) or the range (ge / gt / le / lt) a field accepts, as text."""
    annotation = info.annotation
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            return "one of " + ", ".join(repr(v) for v in typing.get_args(arg))
    bounds = []
    for item in info.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(item, attr, None) is not None:
                bounds.append(f"{sign} {getattr(item, attr)}")
    optional = type(None) in typing.get_args(annotation)
    text = " and ".join(bounds)
    if optional:
        text = (text + "; " if text else "") + "or unset"
    return text


def run(args: argparse.Namespace) -> int:
    """Print every config option (section.key = default, allowed values, sd-scripts' default, help) whose name
    contains the filter; returns 0."""
    from engine.config.schema import SECTIONS
    from engine.interop.kohya_key_tables import SD_SCRIPTS_DEFAULTS

    for section, cls in SECTIONS.items():
        for key, info in cls.model_fields.items():
            if args.filter in key:
                default = info.get_default(call_default_factory=True)
                extra = []
                allowed = allowed_values(info)
                if allowed:
                    extra.append(f"allowed: {allowed}")
                if key in SD_SCRIPTS_DEFAULTS:
                    extra.append(f"sd-scripts default: {SD_SCRIPTS_DEFAULTS[key]!r}")
                suffix = f"  ({'; '.join(extra)})" if extra else ""
                print(f"{section}.{key} = {default!r}{suffix}\n    {info.description}")
    return 0
