"""The one check of a run config that `train`, `plan` and the wizard all make before any model
loads: the cross-option rules (engine/config/rules.py) over the config and its dataset TOML,
and the sample prompts file read and range-checked (engine/config/sample_prompts.py).
The same messages come out of all three, because they come from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from engine.config.schema import RunConfig

if TYPE_CHECKING:  # pragma: no cover
    from engine.data.dataset_config import DatasetConfig


@dataclass(frozen=True)
class CheckedConfig:
    """What the pre-flight check found that does not stop the run, and the sample prompts it parsed."""
    warnings: tuple[str, ...]
    sample_prompts: tuple = ()  # SamplePrompt, parsed once


def check_config(cfg: RunConfig, base_dir: Optional[Path | str] = None,
                 dataset_config: Optional["DatasetConfig"] = None) -> CheckedConfig:
    """Raises ConfigError (exit 78) for the first rule errors (all listed) or a bad prompts
    file; returns the warnings. Relative paths resolve against `base_dir` (the run config's folder).
    `dataset_config` is the dataset config parsed once by the caller; when None and the config
    names one, it is read here."""
    from engine.config.rules import check_rules, raise_for_errors

    if dataset_config is None and cfg.dataset.dataset_config:
        from engine.data.dataset_config import load_run_dataset_config

        dataset_config = load_run_dataset_config(cfg, base_dir)
    issues = check_rules(cfg, dataset_config)
    raise_for_errors(issues)
    warnings = [issue.message for issue in issues if issue.level == "warning"]
    prompts: list = []
    if cfg.sampling.sample_prompts:
        from engine.config.sample_prompts import read_sample_prompts

        path = Path(cfg.sampling.sample_prompts).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        prompts, prompt_warnings = read_sample_prompts(path)
        warnings += prompt_warnings
    return CheckedConfig(tuple(warnings), tuple(prompts))
