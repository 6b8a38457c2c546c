"""`sdxl-tui plan CONFIG.toml`: check a config and its dataset without loading a model."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui plan`: CONFIG, --set, --world-size."""
    parser.add_argument("config", help="run config TOML (its dataset_config path is relative to its folder), "
                                       "sd-scripts args TOML or kohya_ss GUI JSON")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override an option for this check, e.g. --set train_batch_size=4 (repeatable)")
    parser.add_argument("--world-size", type=int, default=1, metavar="N",
                        help="count batches per process for N training processes (default 1)")


def run(args: argparse.Namespace) -> int:
    """Print the plan (dataset, buckets, steps, caches, VRAM, caption lengths) without loading a model; returns 0.
    Raises DataError when the dataset has problems, ConfigError for a bad config."""
    from pathlib import Path

    from rich.console import Console
    from rich.markup import escape

    from engine.data.scan import data_error
    from engine.plan.run_plan import make_plan
    from sdxl_tui.commands.train import load_run_config

    cfg = load_run_config(args.config, args.sets)  # read as `train` reads it (ours or sd-scripts' args TOML)
    plan = make_plan(cfg, base_dir=Path(args.config).resolve().parent, world_size=max(1, args.world_size))
    console = Console(highlight=False, soft_wrap=True)
    for line in plan.lines():
        style = "red" if line.lstrip().startswith("✗") else "yellow" if line.lstrip().startswith("!") else None
        console.print(escape(line), style=style)
    from engine.plan.caption_length import caption_lengths

    lengths = caption_lengths(cfg, plan.scanned)
    if lengths is not None:
        console.print(escape(lengths.line()), style="yellow" if lengths.too_long else None)
    if plan.problems:
        raise data_error(plan.scanned)
    return 0
