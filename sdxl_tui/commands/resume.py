"""`sdxl-tui resume OUTPUT_DIR`: continue a stopped run from its newest complete saved state.

The run's own config (OUTPUT_DIR/config.toml) is used; `--set` may change what can change
(more steps, save frequency...). The global step continues from the state.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui resume`: OUTPUT_DIR, --set, --plain."""
    parser.add_argument("output_dir", help="the output_dir of the run to continue")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="change an option for the rest of the run, e.g. --set max_train_steps=2000")
    parser.add_argument("--plain", action="store_true", help="plain lines even in a terminal (no live panel)")


def run(args: argparse.Namespace) -> int:
    """Continue the run in OUTPUT_DIR from its newest saved state, with its own config.toml; returns train's exit
    code. Raises OutputError when the folder holds no run."""
    from engine.errors import OutputError
    from sdxl_tui.commands.train import load_run_config, train_headless

    config = Path(args.output_dir).expanduser() / "config.toml"
    if not config.is_file():
        raise OutputError(f"{args.output_dir} holds no run (no config.toml)",
                          hint="pass the output_dir of a run started with `sdxl-tui train` or the wizard")
    cfg = load_run_config(str(config), args.sets)
    # the run lives where its config lives, wherever the folder was moved to
    # ...and from its newest state: a `resume` folder the run once started from is history now
    cfg = cfg.with_values(output_dir=str(config.parent.resolve()), resume="")
    return train_headless(cfg, resume=True, plain=args.plain)
