"""RunConfig -> an args TOML + dataset TOML that sd-scripts' `sdxl_train_network.py` accepts,
the `accelerate launch` line that runs it, and notes where sd-scripts will behave differently.

Tables are named as sd-scripts' documentation shows them (sd-scripts flattens them anyway).
Options only sdxl-tui has go into an `[sdxl_tui]` table: sd-scripts ignores unknown keys,
and `import-kohya` reads them back, so export -> import keeps the whole config.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.config.schema import RunConfig

ARGS_FILE = "sdxl_train_network.toml"
DATASET_FILE = "dataset.toml"
_TABLES = {
    "model": "model_arguments", "dataset": "dataset_arguments", "network": "additional_network_arguments",
    "optimizer": "optimizer_arguments", "training": "training_arguments", "precision": "training_arguments",
    "caching": "training_arguments", "saving": "saving_arguments", "sampling": "sample_prompt_arguments",
    "logging": "logging_arguments",
}
_OURS_ONLY = {"skip_bad_images", "log_every_n_steps", "ema_decay", "ema_update_every"}
_HANDLED = {"text_encoder_lr1", "text_encoder_lr2", "dataset_config", "save_precision", "lr_warmup_steps",
            "network_args", "max_train_epochs", "lr_decay_steps"}


@dataclass
class ExportResult:
    """What export_kohya wrote: the args TOML, the dataset TOML (None when the config has none), the sd-scripts
    command line, and notes on what did not carry over."""
    args_path: Path
    dataset_path: Optional[Path]
    command: str
    notes: list[str] = field(default_factory=list)


def _warmup(value: float) -> Any:
    return int(value) if float(value).is_integer() else value  # below 1 sd-scripts reads a ratio


def _network_args(cfg: RunConfig) -> list[str]:
    args = list(cfg.network.network_args)
    parsed = cfg.network.parsed_args
    if "conv_dim" in parsed and "conv_alpha" not in parsed:
        # Same value sd-scripts would take (1); written out so the file says what trains.
        args.append(f"conv_alpha={cfg.network.conv_alpha:g}")
    return args


def _special_values(cfg: RunConfig, notes: list[str]) -> dict[str, Any]:
    opt, tr = cfg.optimizer, cfg.training
    out: dict[str, Any] = {
        "save_precision": "float" if cfg.saving.save_precision == "fp32" else cfg.saving.save_precision,
        "lr_warmup_steps": _warmup(opt.lr_warmup_steps),
        "lr_decay_steps": _warmup(opt.lr_decay_steps),
        "network_args": _network_args(cfg),
    }
    if opt.text_encoder_lr1 == opt.text_encoder_lr2:
        if opt.text_encoder_lr1 is not None:
            out["text_encoder_lr"] = opt.text_encoder_lr1
    else:
        lr1, lr2 = opt.resolved_text_encoder_lr1, opt.resolved_text_encoder_lr2
        out["text_encoder_lr"] = [lr1, lr2]
        notes.append(f"two text-encoder rates ({lr1:g}, {lr2:g}): sd-scripts' networks.lora takes one and "
                     f"trains both encoders at {lr1:g}")
    if tr.max_train_steps is not None and tr.max_train_epochs is not None:
        notes.append("max_train_epochs left out: in sdxl-tui max_train_steps wins, in sd-scripts epochs would")
    elif tr.max_train_epochs is not None:
        out["max_train_epochs"] = tr.max_train_epochs
    if cfg.precision.fused_backward_pass:
        notes.append("fused_backward_pass: sd-scripts accepts it for LoRA but only implements it for full "
                     "fine-tuning, so full gradients will be held in memory there")
    return out


def build_args_document(cfg: RunConfig, dataset_path: Optional[Path], notes: list[str]):
    """The sd-scripts args TOML (a tomlkit document, sd-scripts' option names in its tables) for `cfg`; options sd-
    scripts has no equivalent for are added to `notes`."""
    import tomlkit

    from engine.config.schema import SECTIONS

    doc = tomlkit.document()
    doc.add(tomlkit.comment("sd-scripts args for sdxl_train_network.py --config_file "
                            "(written by sdxl-tui export-kohya)"))
    tables: dict[str, Any] = {}
    special = _special_values(cfg, notes)
    extras = tomlkit.table()
    for section in SECTIONS:
        table = tables.setdefault(_TABLES[section], tomlkit.table())
        for key, value in getattr(cfg, section).model_dump().items():
            if key in _OURS_ONLY:
                if value is not None:  # TOML has no null; unset is the default on import
                    extras[key] = value
                continue
            if key in _HANDLED:
                continue
            if value is None or value == "" or value == []:
                continue
            table[key] = value
    if dataset_path is not None:
        tables["dataset_arguments"]["dataset_config"] = str(dataset_path)
    for key, value in special.items():
        target = {"save_precision": "saving_arguments", "max_train_epochs": "training_arguments",
                  "network_args": "additional_network_arguments"}.get(key, "optimizer_arguments")
        if value != []:
            tables[target][key] = value
    for name, table in tables.items():
        doc.add(tomlkit.nl())
        doc.add(name, table)
    doc.add(tomlkit.nl())
    doc.add(tomlkit.comment("sdxl-tui only: sd-scripts ignores this table; sdxl-tui import-kohya reads it back"))
    doc.add("sdxl_tui", extras)
    return doc


def _dataset_source(cfg: RunConfig, config_dir: Optional[Path]) -> Optional[Path]:
    raw = cfg.dataset.dataset_config
    if not raw:
        return None
    p = Path(raw).expanduser()
    return p if p.is_absolute() else (config_dir or Path.cwd()) / p


def write_dataset_toml(source: Path, target: Path) -> Path:
    """The dataset TOML (or JSON) as TOML with absolute image paths: sd-scripts reads relative
    paths from its working directory, sdxl-tui from the file's folder."""
    import tomlkit

    from engine.errors import ConfigError
    from engine.interop.kohya_toml import absolutise_paths
    from engine.storage.atomic import atomic_write_text

    if not source.is_file():
        raise ConfigError(f"dataset config not found: {source}", key="dataset_config",
                          hint="check [dataset] dataset_config")
    from engine.config.toml_text import read_config_text

    text = read_config_text(source, "dataset config")
    doc = tomlkit.item(json.loads(text)) if source.suffix.lower() == ".json" else tomlkit.parse(text)
    if source.suffix.lower() == ".json":
        fresh = tomlkit.document()
        for key, value in doc.items():
            fresh[key] = value
        doc = fresh
    absolutise_paths(doc, source.resolve().parent)
    return atomic_write_text(target, tomlkit.dumps(doc))


def export_kohya(cfg: RunConfig, out_dir: str | Path, *, config_dir: Optional[Path] = None) -> ExportResult:
    """Write sd-scripts args and dataset TOML files for `cfg` into `out_dir`; relative paths are resolved against
    `config_dir`. Raises OSError when the files cannot be written."""
    import tomlkit

    from engine.storage.atomic import atomic_write_text

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    source = _dataset_source(cfg, config_dir)
    dataset_path = write_dataset_toml(source, out / DATASET_FILE) if source else None
    if dataset_path is None:
        notes.append("no dataset_config in this config: add one before running sd-scripts")
    doc = build_args_document(cfg, dataset_path, notes)
    from engine.interop.kohya_tokenizers import write_sd_scripts_tokenizer_cache

    tokenizer_dir, note = write_sd_scripts_tokenizer_cache(out, cfg.model.tokenizer_cache_dir)
    doc[_TABLES["model"]]["tokenizer_cache_dir"] = str(tokenizer_dir)  # sd-scripts then loads them offline
    notes.append(note)
    for key in _OURS_ONLY:
        default = RunConfig().model_dump()[_section_of(key)][key]
        if getattr(getattr(cfg, _section_of(key)), key) != default:
            notes.append(f"{key} is sdxl-tui only; sd-scripts has no equivalent")
    args_path = atomic_write_text(out / ARGS_FILE, tomlkit.dumps(doc))
    command = f'accelerate launch --num_cpu_threads_per_process 1 sdxl_train_network.py --config_file "{args_path}"'
    return ExportResult(args_path, dataset_path, command, notes)


def _section_of(key: str) -> str:
    from engine.config.schema import option_index

    return option_index()[key]


def command_line(cfg: RunConfig) -> str:
    """The same run as one `accelerate launch ... sdxl_train_network.py --opt=value ...` line
    (the dataset TOML path as the config names it)."""
    import shlex

    from engine.interop.kohya_toml import flatten_args

    doc = build_args_document(cfg, None, [])
    flat = flatten_args({k: v for k, v in doc.unwrap().items() if k != "sdxl_tui"})
    if cfg.dataset.dataset_config:
        flat["dataset_config"] = cfg.dataset.dataset_config
    parts = ["accelerate launch --num_cpu_threads_per_process 1 sdxl_train_network.py"]
    for key, value in flat.items():
        if value is True:
            parts.append(f"--{key}")
        elif value is False:
            continue
        elif isinstance(value, list):
            parts.append(f"--{key} " + " ".join(shlex.quote(str(v)) for v in value))
        else:
            parts.append(f"--{key}={shlex.quote(str(value))}")
    return " \\\n  ".join(parts)
