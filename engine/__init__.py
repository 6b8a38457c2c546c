"""sdxl-tui's training engine: the one public door.

Everything a front end needs is named here and imported lazily, so ``import engine`` costs no
torch (``sdxl-tui --help`` stays fast). The packages below, from the ground up:

- ``errors``   the exceptions and their exit codes
- ``units``    sizes as people read them (decimal GB everywhere)
- ``events``   what a run reports (types, the JSONL log, following a log)
- ``control``  what a run is told (stop/save/sample, the command file, signals)
- ``storage``  atomic writes and free-space checks
- ``model``    model sources, loading (folders and single files), SDXL layout, text encoding
- ``config``   the run config schema, its TOML file, and cross-option rules
- ``data``     dataset config, scan, buckets, images, captions, batching, caching
- ``lora``     the LoRA network, its file, key names and inspection
- ``demo``     the tiny SDXL and the demo dataset (tests and ``sdxl-tui demo`` only)
- ``outputs``  checkpoints, resume, sampling, sample prompts, the run's writer
- ``plan``     what a run will do before it loads a model: steps, buckets, VRAM, OOM advice
- ``interop``  sd-scripts / kohya_ss configs in and out, accelerate configs
- ``train``    the run: loop, loss, optimizers, schedulers, fused backward, DDP
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS = {
    "run": "engine.train.run",
    "RunResult": "engine.train.run_result",
    "RunConfig": "engine.config.schema",
    "RunControl": "engine.control.run_control",
    "load_config": "engine.config.toml_file",
    "loads_config": "engine.config.toml_file",
    "save_config": "engine.config.toml_file",
    "dumps_config": "engine.config.toml_file",
    "apply_sets": "engine.config.toml_file",
    "make_plan": "engine.plan.run_plan",
    "Plan": "engine.plan.run_plan",
    "SdxlTuiError": "engine.errors",
    "ConfigError": "engine.errors",
    "DataError": "engine.errors",
    "ModelError": "engine.errors",
    "OutputError": "engine.errors",
    "DiskFullError": "engine.errors",
    "TrainingDiverged": "engine.errors",
    "OutOfVideoMemory": "engine.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover  (`import X as X`: an explicit re-export for type checkers and linters)
    from engine.config.schema import RunConfig as RunConfig
    from engine.config.toml_file import apply_sets as apply_sets
    from engine.config.toml_file import dumps_config as dumps_config
    from engine.config.toml_file import load_config as load_config
    from engine.config.toml_file import loads_config as loads_config
    from engine.config.toml_file import save_config as save_config
    from engine.control.run_control import RunControl as RunControl
    from engine.errors import ConfigError as ConfigError
    from engine.errors import DataError as DataError
    from engine.errors import DiskFullError as DiskFullError
    from engine.errors import ModelError as ModelError
    from engine.errors import OutOfVideoMemory as OutOfVideoMemory
    from engine.errors import OutputError as OutputError
    from engine.errors import SdxlTuiError as SdxlTuiError
    from engine.errors import TrainingDiverged as TrainingDiverged
    from engine.plan.run_plan import Plan as Plan
    from engine.plan.run_plan import make_plan as make_plan
    from engine.train.run import run as run
    from engine.train.run_result import RunResult as RunResult

def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first use (PEP 562)."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = getattr(module, name)
    globals()[name] = value
    return value
