"""`sdxl-tui demo [--dir DIR] [--steps N]`: the whole product on a laptop CPU in a minute.

Makes the tiny SDXL-shaped model and the demo dataset under DIR (./demo) when absent,
writes DIR/run.toml from the CPU demo template, and trains it headless. Re-running starts a
new output folder (output, output-2, ...) rather than touching an earlier run.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "cpu-demo.toml"  # package data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui demo`: --dir, --steps, --plain."""
    parser.add_argument("--dir", default="demo",
                        help="folder for the model, dataset, config and output (default ./demo)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the template's, 60)")
    parser.add_argument("--plain", action="store_true", help="plain lines even in a terminal (no live panel)")


def ensure_demo_files(folder: Path) -> tuple[Path, Path]:
    """(tiny model diffusers folder, dataset folder), built only when missing."""
    from engine.demo.dataset import make_demo_dataset
    from engine.demo.tiny_model import build_tiny_model

    model_dir = folder / "tiny-sdxl"
    if not (model_dir / "model_index.json").is_file():
        print(f"building the tiny SDXL model in {model_dir} ...", flush=True)
        build_tiny_model(folder)
    dataset_dir = folder / "dataset"
    if not (dataset_dir / "dataset.toml").is_file():
        print(f"writing the demo dataset in {dataset_dir} ...", flush=True)
        make_demo_dataset(dataset_dir, resolution=64)
    return model_dir, dataset_dir


def free_output_name(folder: Path) -> str:
    """The first of output, output-2, ... in `folder` that holds no earlier run."""
    name, number = "output", 1
    while (folder / name / "config.toml").exists() or (folder / name / "events.jsonl").exists():
        number += 1
        name = f"output-{number}"
    return name


def write_demo_config(folder: Path, steps: int | None) -> Path:
    """DIR/run.toml: the template (comments kept) with the demo's paths, relative to DIR."""
    from engine.config.toml_file import load_config_with_document, save_config

    values: dict[str, Any] = {
        "pretrained_model_name_or_path": "tiny-sdxl",
        "dataset_config": "dataset/dataset.toml",
        "sample_prompts": "dataset/sample_prompts.txt",
        "output_dir": free_output_name(folder),
    }
    if steps is not None:
        values["max_train_steps"] = steps
    if not TEMPLATE.is_file():
        from engine.errors import ConfigError

        raise ConfigError(f"the CPU demo preset {TEMPLATE} is missing from this install",
                          hint="reinstall sdxl-tui (the presets are package data of sdxl_tui)")
    cfg, document = load_config_with_document(TEMPLATE)
    cfg = cfg.with_values(**values)
    return save_config(cfg, folder / "run.toml", base=document)


def run(args: argparse.Namespace) -> int:
    """Build the tiny model and demo dataset in --dir (once), write a config and train it headless; returns train's
    exit code."""
    from sdxl_tui.commands.train import load_run_config, train_headless

    folder = Path(args.dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    ensure_demo_files(folder)
    config_path = write_demo_config(folder, args.steps)
    print(f"config: {config_path}  (replay it with: sdxl-tui train {config_path})", flush=True)
    return train_headless(load_run_config(str(config_path), []), plain=args.plain)
