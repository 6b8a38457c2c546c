"""Any config a user brings, as a RunConfig: ours, an sd-scripts args TOML, or a kohya_ss GUI JSON.

`sdxl-tui train FILE` and the wizard's import read through here; the notes say what was converted.
"""
from __future__ import annotations

from pathlib import Path

from engine.config.schema import RunConfig


def is_gui_json_file(path: str | Path) -> bool:
    """A .json file holding a kohya_ss GUI config (read only as far as needed)."""
    from engine.interop.kohya_gui import is_kohya_gui_json, read_gui_json

    p = Path(path).expanduser()
    if p.suffix.lower() != ".json" or not p.is_file():
        return False
    return is_kohya_gui_json(read_gui_json(p))


def load_any_config(path: str | Path, *, require_dataset: bool = True) -> tuple[RunConfig, list[str]]:
    """(RunConfig, notes). A GUI JSON's side files (dataset TOML for a folder dataset, sample prompts,
    accelerate config) are written into its output_dir as kohya_gui.*; raises ConfigError as the
    import does, and (with `require_dataset`, for training) when the GUI config names no dataset."""
    from engine.errors import ConfigError
    from engine.interop.kohya_gui import read_gui_json
    from engine.interop.kohya_gui_import import import_kohya_gui
    from engine.interop.kohya_import import load_any_config as load_toml_config

    if not is_gui_json_file(path):
        return load_toml_config(path)
    gui = read_gui_json(path)
    if require_dataset and not gui.get("dataset_config") and not gui.get("train_data_dir"):
        raise ConfigError(f"{path} is a kohya_ss GUI config without train_data_dir or dataset_config",
                          path=str(path), hint="set the image folder in the GUI and save again, or use "
                          "`sdxl-tui import-kohya FILE.json --train-data-dir DIR -o run.toml`")
    base = Path(path).expanduser().resolve().parent
    out_dir = Path(str(gui.get("output_dir") or "output")).expanduser()
    out_dir = out_dir if out_dir.is_absolute() else base / out_dir
    result = import_kohya_gui(path, side_path=out_dir / "kohya_gui.toml")
    return result.config, [f"{path} is a kohya_ss GUI config; converted:"] + result.lines()
