"""`sdxl-tui export-kohya run.toml -o DIR`: sd-scripts args + dataset TOML and the command line."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sdxl-tui run config TOML")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the args and dataset TOML files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.config.toml_file import load_config
    from engine.interop.kohya_export import export_kohya

    config_path = Path(args.config)
    result = export_kohya(load_config(config_path), args.output_dir, config_dir=config_path.resolve().parent)
    print(f"wrote {result.args_path}")
    if result.dataset_path:
        print(f"wrote {result.dataset_path}")
    for note in result.notes:
        print(f"note: {note}")
    print("run it in sd-scripts' folder with:")
    print(f"  {result.command}")
    return 0
