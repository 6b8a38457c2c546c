"""sd-scripts `--config_file` args TOML -> RunConfig, with a note for every key.

sd-scripts' rules, followed here: table names are decoration (every table is flattened one
level into one namespace); keys are option names (ours are the same names, so most map 1:1);
there is no unknown-key check there, so every key is reported here as mapped, renamed,
converted, moved to the dataset TOML, or not used. Options sd-scripts takes on the command
line as dataset defaults (resolution, caption_extension, ...) sit beneath the dataset TOML's
[general] table, so they are merged into a copy of it where [general] lacks them.
Keys the args file does not set take sd-scripts' defaults where ours differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.interop.kohya_arg_keys import KeyConverter, KeyNote, known_args_keys
from engine.interop.kohya_dataset import place_dataset_values
from engine.interop.kohya_key_tables import HARMLESS, SD_SCRIPTS_DEFAULTS, SD_SCRIPTS_MAX_TRAIN_STEPS
from engine.interop.kohya_toml import absolutise_paths, choose_reading, flatten_args, read_toml


@dataclass
class ImportResult:
    """An args file converted: the RunConfig, a note per key and extra messages, the dataset defaults
    for the dataset TOML's [general] table, and the folder-style dataset folders (train_data_dir,
    reg_data_dir, in_json; absolute paths).
    """
    config: RunConfig
    notes: list[KeyNote] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    dataset_defaults: dict[str, Any] = field(default_factory=dict)  # for the dataset TOML's [general]
    folders: dict[str, str] = field(default_factory=dict)  # folder-style dataset: train_data_dir, reg_data_dir, in_json

    def lines(self) -> list[str]:
        """The report: one line per key note, then the messages."""
        return [str(n) for n in self.notes] + self.messages


# "not used" notes that are no loss: off values, and sd-scripts' own precedence.
_NOT_USED_IS_FINE = ("off", "unset", "off (the dataset default)")
_NOT_USED_BY_DESIGN = {"max_train_steps", "sample_sampler", "train_data_dir", "reg_data_dir", "in_json"}


def changes_training(note: KeyNote) -> bool:
    """True for a note saying a set option was dropped although it changes what trains (the
    kohya_ss GUI import refuses those by name)."""
    if note.status != "not used" or note.key in HARMLESS or note.key in _NOT_USED_BY_DESIGN:
        return False
    return note.detail not in _NOT_USED_IS_FINE and not note.detail.startswith("not in the file")


def is_kohya_args(doc: Mapping[str, Any]) -> bool:
    """True for a file that is, or may be, an sd-scripts args TOML, recognised by its keys
    (kohya_toml.choose_reading); `import-kohya` converts both, noting the keys it does not know."""
    return choose_reading(doc, known_args_keys()).kind != "ours"


def _finish(values: dict[str, Any], notes: list[KeyNote]) -> None:
    """sd-scripts' defaults for keys the file leaves out, and its steps/epochs precedence."""
    for key, default in SD_SCRIPTS_DEFAULTS.items():
        if key not in values:
            values[key] = default
            notes.append(KeyNote(key, "converted", f"not in the file: sd-scripts' default {default!r}"))
    if values.get("max_train_epochs") is not None and values.get("max_train_steps") is not None:
        values.pop("max_train_steps")
        notes.append(KeyNote("max_train_steps", "not used", "max_train_epochs is set, and in sd-scripts epochs win"))
    elif values.get("max_train_epochs") is None and values.get("max_train_steps") is None:
        values["max_train_steps"] = SD_SCRIPTS_MAX_TRAIN_STEPS
        notes.append(KeyNote("max_train_steps", "converted",
                             f"not in the file: sd-scripts' default {SD_SCRIPTS_MAX_TRAIN_STEPS}"))
    if values.get("seed") is None:
        values["seed"] = 42
        notes.append(KeyNote("seed", "converted", "unset: sd-scripts picks a random seed each run; sdxl-tui uses 42"))


def convert_kohya_args(doc: Mapping[str, Any], *, dataset_config: Optional[str] = None,
                       base_dir: Optional[Path] = None) -> ImportResult:
    """An args TOML (parsed) -> RunConfig plus a note for every key. Writes nothing."""
    from pydantic import ValidationError

    from engine.config.schema import locate

    conv = KeyConverter(Path(base_dir) if base_dir else Path.cwd())
    conv.run(flatten_args(doc))
    if conv.refused:
        listed = "\n".join(f"  - {r}" for r in conv.refused)
        raise ConfigError("the args file sets options sdxl-tui refuses:\n" + listed,
                          key=conv.refused[0].split(" ", 1)[0], hint="remove them (or set them off) and try again")
    if dataset_config:
        conv.values["dataset_config"] = dataset_config
        conv.note("--dataset-config", "mapped", f"dataset_config = {dataset_config}")
    _finish(conv.values, conv.notes)
    data: dict[str, dict[str, Any]] = {}
    for key, value in conv.values.items():
        section, name = locate(key)
        data.setdefault(section, {})[name] = value
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})",
                          key=str(first["loc"][-1]), hint="fix this value in the sd-scripts args file") from None
    result = ImportResult(cfg, conv.notes, dataset_defaults=conv.dataset_defaults, folders=conv.folders)
    if not cfg.dataset.dataset_config:
        result.messages.append("folder-style dataset: a dataset TOML is built from train_data_dir's subfolders"
                               if conv.train_data_dir else
                               "no dataset: pass the sd-scripts dataset TOML with --dataset-config")
    return result


def merge_dataset_defaults(dataset_toml: str | Path, defaults: Mapping[str, Any], out_path: str | Path) -> Path:
    """Copy of a dataset TOML with `defaults` added to [general] where absent (command-line
    values sit below [general] in sd-scripts) and relative image paths made absolute."""
    import tomlkit

    from engine.storage.atomic import atomic_write_text

    src = Path(dataset_toml)
    from engine.config.toml_text import parse_toml, read_config_text

    doc = parse_toml(read_config_text(src, "dataset config"), str(src))
    general = doc.get("general")
    if general is None:
        general = tomlkit.table()
        doc.add("general", general)
    for key, value in defaults.items():
        if key not in general:
            general[key] = value
    absolutise_paths(doc, src.resolve().parent)
    return atomic_write_text(Path(out_path), tomlkit.dumps(doc))


def import_kohya(args_path: str | Path, *, dataset_config: Optional[str] = None,
                 merged_dataset_path: Optional[str | Path] = None) -> ImportResult:
    """Read an args TOML. When it carries dataset defaults and a dataset TOML exists, the merged
    dataset TOML is written to `merged_dataset_path`; for a folder-style dataset (train_data_dir
    without a dataset TOML) the dataset TOML sd-scripts would build is written there."""
    result = convert_kohya_args(read_toml(args_path), dataset_config=dataset_config,
                                base_dir=Path(args_path).expanduser().resolve().parent)
    return place_dataset(result, merged_dataset_path)


def place_dataset(result: ImportResult, merged_dataset_path: Optional[str | Path]) -> ImportResult:
    """Point the config at the dataset TOML to train from (see kohya_dataset.place_dataset_values)."""
    cfg, messages = place_dataset_values(result.config, result.dataset_defaults, result.folders, merged_dataset_path,
                                         merge_dataset_defaults)
    result.config = cfg
    result.messages = [m for m in result.messages if not m.startswith("folder-style dataset:")] + messages
    return result


def load_any_config(path: str | Path) -> tuple[RunConfig, list[str]]:
    """Our run config as is, or an sd-scripts args TOML converted (notes say what happened)."""
    from engine.config.toml_file import load_config

    doc = read_toml(path)
    reading = choose_reading(doc, known_args_keys())
    if reading.kind == "neither":
        raise ConfigError(f"cannot tell what kind of config this is: {reading.why}", path=str(path),
                          hint="sdxl-tui configs start with schema_version; for an sd-scripts args file fix the "
                               f"names above or convert it with `sdxl-tui import-kohya {path}`")
    if reading.kind == "ours":
        return load_config(path), []
    result = convert_kohya_args(doc, base_dir=Path(path).expanduser().resolve().parent)
    if not result.config.dataset.dataset_config and not result.folders.get("train_data_dir"):
        raise ConfigError(f"{path} is an sd-scripts args file without a dataset_config or train_data_dir",
                          path=str(path), hint=result.messages[-1] if result.messages else "add dataset_config")
    result = place_dataset(result, Path(result.config.saving.output_dir) / "kohya_dataset.toml")
    return result.config, [f"{path} is an sd-scripts args file; converted:"] + result.lines()


