"""The one check of a run config that `train`, `plan` and the wizard all make before any model
loads: the cross-option rules (engine/config/rules.py) over the config and its dataset TOML,
and the sample prompts file read and range-checked (engine/outputs/sample_prompts.py).
The same messages come out of all three, because they come from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.config.schema import RunConfig


@dataclass(frozen=True)
class CheckedConfig:
    warnings: tuple[str, ...]
    sample_prompts: tuple = ()  # SamplePrompt, parsed once


def check_config(cfg: RunConfig, base_dir: Optional[Path | str] = None) -> CheckedConfig:
    """Raises ConfigError (exit 78) for the first rule errors (all listed) or a bad prompts
    file; returns the warnings. Relative paths resolve against `base_dir` (the run config's folder)."""
    from engine.config.rules import check_rules, raise_for_errors

    dataset_config = None
    if cfg.dataset.dataset_config:
        from engine.data.dataset_config import load_dataset_config, resolve_dataset_config_path

        dataset_config = load_dataset_config(resolve_dataset_config_path(cfg, base_dir),
                                             default_batch_size=cfg.training.train_batch_size)
    issues = check_rules(cfg, dataset_config)
    raise_for_errors(issues)
    warnings = [issue.message for issue in issues if issue.level == "warning"]
    prompts: list = []
    if cfg.sampling.sample_prompts:
        from engine.outputs.sample_prompts import read_sample_prompts

        path = Path(cfg.sampling.sample_prompts).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        prompts, prompt_warnings = read_sample_prompts(path)
        warnings += prompt_warnings
    return CheckedConfig(tuple(warnings), tuple(prompts))
