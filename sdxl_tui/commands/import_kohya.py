"""`sdxl-tui import-kohya ARGS.toml [--dataset-config DS.toml] -o run.toml`."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args_file", help="sd-scripts args TOML (the file given to --config_file)")
    parser.add_argument("--dataset-config", default=None,
                        help="sd-scripts dataset TOML (overrides dataset_config in the args file)")
    parser.add_argument("-o", "--output", required=True, help="run config TOML to write")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.config.toml_file import save_config
    from engine.errors import ConfigError
    from engine.interop.kohya_import import import_kohya, is_kohya_args
    from engine.interop.kohya_toml import read_toml

    if not is_kohya_args(read_toml(args.args_file)):
        raise ConfigError(f"{args.args_file} does not look like an sd-scripts args TOML",
                          hint="it is probably an sdxl-tui config already: use it with `sdxl-tui train` directly")
    out = Path(args.output)
    dataset = str(Path(args.dataset_config).resolve()) if args.dataset_config else None
    result = import_kohya(args.args_file, dataset_config=dataset,
                          merged_dataset_path=out.with_name(out.stem + ".dataset.toml"))
    save_config(result.config, out)
    for line in result.lines():
        print(line)
    print(f"wrote {out}")
    return 0
