"""`sdxl-tui import-kohya FILE -o run.toml`: an sd-scripts args TOML or a kohya_ss GUI JSON -> run config."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui import-kohya`: the args TOML or GUI JSON, a dataset TOML, and the GUI-only folders and
    model."""
    parser.add_argument("args_file", help="sd-scripts args TOML (the file given to --config_file), or a kohya_ss "
                                          "GUI config / preset JSON")
    parser.add_argument("--dataset-config", default=None,
                        help="sd-scripts dataset TOML (overrides dataset_config in the file)")
    parser.add_argument("--train-data-dir", default=None,
                        help="GUI JSON only: image folder with <repeats>_<class tokens> subfolders (a preset has none)")
    parser.add_argument("--reg-data-dir", default=None, help="GUI JSON only: regularisation image folder")
    parser.add_argument("--model", default=None, help="GUI JSON only: pretrained_model_name_or_path")
    parser.add_argument("--output-dir", default=None, help="GUI JSON only: output_dir for the run")
    parser.add_argument("-o", "--output", required=True, help="run config TOML to write")


def _gui_paths(args: argparse.Namespace) -> dict[str, str]:
    from pathlib import Path

    given = {"train_data_dir": args.train_data_dir, "reg_data_dir": args.reg_data_dir,
             "pretrained_model_name_or_path": args.model, "output_dir": args.output_dir}
    return {k: str(Path(v).expanduser().resolve()) if Path(v).expanduser().exists() else v
            for k, v in given.items() if v}


def run(args: argparse.Namespace) -> int:
    """Convert the file to a run config at --output and print what was converted or dropped; returns 0. Raises
    ConfigError for GUI-only options with an args TOML, or a file that is not sd-scripts'."""
    from pathlib import Path

    from engine.config.toml_file import save_config
    from engine.errors import ConfigError
    from engine.interop.any_config import is_gui_json_file
    from engine.interop.kohya_import import import_kohya, is_kohya_args
    from engine.interop.kohya_toml import read_toml

    out = Path(args.output)
    dataset = str(Path(args.dataset_config).resolve()) if args.dataset_config else None
    if is_gui_json_file(args.args_file):
        from engine.interop.kohya_gui_import import import_kohya_gui

        result = import_kohya_gui(args.args_file, dataset_config=dataset, side_path=out, paths=_gui_paths(args))
    else:
        if _gui_paths(args):
            raise ConfigError("--train-data-dir / --reg-data-dir / --model / --output-dir are for kohya_ss GUI JSON",
                              hint="for an args TOML, set train_data_dir etc. in the file")
        if not is_kohya_args(read_toml(args.args_file)):
            raise ConfigError(f"{args.args_file} does not look like an sd-scripts args TOML",
                              hint="it is probably an sdxl-tui config already: use it with `sdxl-tui train` directly")
        result = import_kohya(args.args_file, dataset_config=dataset,
                              merged_dataset_path=out.with_name(out.stem + ".dataset.toml"))
    save_config(result.config, out)
    for line in result.lines():
        print(line)
    print(f"wrote {out}")
    return 0
