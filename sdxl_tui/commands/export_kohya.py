"""`sdxl-tui export-kohya run.toml -o DIR [--gui]`: sd-scripts args + dataset TOML and the command
line, or (--gui) a kohya_ss GUI JSON + dataset TOML to load in the GUI's LoRA tab."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui export-kohya`: CONFIG, --output-dir, --gui."""
    parser.add_argument("config", help="sdxl-tui run config TOML")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the files")
    parser.add_argument("--gui", action="store_true",
                        help="write a kohya_ss GUI config JSON (kohya_gui.json) instead of the args TOML")


def run(args: argparse.Namespace) -> int:
    """Write the sd-scripts args and dataset TOML (or with --gui a kohya_ss GUI JSON) and print the sd-scripts
    command; returns 0. Raises ConfigError for a bad config, OSError when a file cannot be written."""
    from pathlib import Path

    from engine.config.toml_file import load_config

    config_path = Path(args.config)
    cfg = load_config(config_path)
    if args.gui:
        from engine.interop.kohya_gui_export import export_kohya_gui

        gui = export_kohya_gui(cfg, args.output_dir, config_dir=config_path.resolve().parent)
        print(f"wrote {gui.json_path}")
        if gui.dataset_path:
            print(f"wrote {gui.dataset_path}")
        for note in gui.notes:
            print(f"note: {note}")
        return 0
    from engine.interop.kohya_export import export_kohya

    result = export_kohya(cfg, args.output_dir, config_dir=config_path.resolve().parent)
    print(f"wrote {result.args_path}")
    if result.dataset_path:
        print(f"wrote {result.dataset_path}")
    for note in result.notes:
        print(f"note: {note}")
    print("run it in sd-scripts' folder with:")
    print(f"  {result.command}")
    return 0
