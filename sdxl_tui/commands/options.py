"""`sdxl-tui options`: every config option, its section, default and help."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("filter", nargs="?", default="", help="show only options whose name contains this")


def run(args: argparse.Namespace) -> int:
    from engine.config.schema import SECTIONS

    for section, cls in SECTIONS.items():
        for key, info in cls.model_fields.items():
            if args.filter in key:
                default = info.get_default(call_default_factory=True)
                print(f"{section}.{key} = {default!r}\n    {info.description}")
    return 0
