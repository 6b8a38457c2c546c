"""`sdxl-tui` / `sdxl-tui wizard`: the terminal wizard."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui wizard`: --config."""
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="open this run config (or sd-scripts config) instead of the start screen")


def run(args: argparse.Namespace) -> int:
    """Run the wizard until it quits; returns Textual's return code (1 after an unhandled error, else 0)."""
    from sdxl_tui.app import WizardApp

    app = WizardApp(config_path=args.config)
    app.run()
    return int(app.return_code or 0)
