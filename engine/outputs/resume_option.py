"""sd-scripts' `resume` option: a path to a saved state folder to continue from.

Ours (`OUTPUT_DIR/state/step-NNNNNNNN`, see engine/outputs/checkpoint.py) is read: the run
continues from that state (not necessarily the newest one) and writes into the config's
output_dir. sd-scripts' state folders (accelerate's `save_state`: pickled `random_states_*.pkl`,
`optimizer.bin`, `model.safetensors`...) are refused by name: their optimizer and RNG files are
pickles made for sd-scripts' own objects, which loading here could neither trust nor map.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.outputs import checkpoint
from engine.outputs.resume import ResumePoint, check_resume_config, missing_files, remove_temp_files

# What accelerate's save_state (called by sd-scripts' train_util.save_and_remove_state_*) writes.
SD_SCRIPTS_STATE_FILES = ("random_states_0.pkl", "optimizer.bin", "scheduler.bin", "model.safetensors",
                          "pytorch_model.bin", "train_state.json")


def resume_problem(value: str) -> Optional[str]:
    """Why `resume = value` cannot be used (a message naming the option and the fix), or None."""
    if not value:
        return None
    folder = Path(value).expanduser()
    if not folder.is_dir():
        return f"resume: {value} is not a folder; give a saved state folder (OUTPUT_DIR/state/step-N)"
    if any((folder / name).exists() for name in SD_SCRIPTS_STATE_FILES) and not (folder / "progress.json").exists():
        return (f"resume: {value} is an sd-scripts (accelerate) state folder; its optimizer and RNG pickles "
                f"cannot be read here. Continue an sdxl-tui run with `sdxl-tui resume OUTPUT_DIR`; to go on "
                f"from an sd-scripts run, start a new run with network_weights set to its last LoRA")
    missing = missing_files(folder)
    if missing:
        return (f"resume: {value} is not a complete sdxl-tui state folder (missing {', '.join(missing)}); "
                f"use `sdxl-tui resume OUTPUT_DIR` for the newest complete state")
    return None


def resume_point_at(folder: Path) -> ResumePoint:
    """The state in `folder` as a ResumePoint; ConfigError naming `resume` when unusable."""
    problem = resume_problem(str(folder))
    if problem:
        raise ConfigError(problem, key="resume", path=str(folder))
    folder = Path(folder).expanduser().resolve()
    try:
        progress = checkpoint.Position.from_record(json.loads((folder / "progress.json").read_text()))
        saved = None
        if (folder / "config.toml").is_file():
            from engine.config.toml_file import loads_config

            saved = loads_config((folder / "config.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"resume: the state {folder} cannot be read ({exc})", key="resume",
                          hint="choose another state folder, or `sdxl-tui resume OUTPUT_DIR`") from None
    return ResumePoint(path=folder, progress=progress, saved_config=saved)


def prepare_resume_from(folder: Path, output_dir: Path, new: RunConfig) -> ResumePoint:
    """As engine.outputs.resume.prepare_resume, for the state folder the `resume` option names."""
    point = resume_point_at(folder)
    check_resume_config(point, new, dataset_checked=bool(point.progress.dataset_hash))
    if Path(output_dir).is_dir():
        point.removed_temp_files = remove_temp_files(output_dir)
    return point

