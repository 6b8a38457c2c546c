"""Cross-option rules for the options of issue 14 (keeping saves, metadata, starting part-way),
kept apart from rules.py so the shared file only lists them. The `resume` folder is checked by
engine/outputs/resume_option.py (before any model loads)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from engine.config.rule_issue import ERROR, WARNING, RuleIssue
from engine.config.schema import RunConfig


def saving_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    """Warnings for saving options that do nothing as combined (pruning without the saves it prunes, and the like)."""
    s = cfg.saving
    if s.save_last_n_steps is not None and s.save_every_n_steps is None:
        yield RuleIssue(WARNING, ("save_last_n_steps", "save_every_n_steps"),
                        "save_last_n_steps only prunes step saves; set save_every_n_steps too")
    if (s.save_last_n_steps_state or s.save_last_n_epochs_state) and not s.save_state:
        yield RuleIssue(WARNING, ("save_last_n_steps_state", "save_last_n_epochs_state", "save_state"),
                        "save_last_n_*_state only prunes saved states; set save_state = true too")
    if s.save_n_epoch_ratio and s.save_every_n_epochs:
        yield RuleIssue(WARNING, ("save_n_epoch_ratio", "save_every_n_epochs"),
                        "save_n_epoch_ratio replaces save_every_n_epochs (as in sd-scripts)")
    thumb = s.metadata_thumbnail
    if thumb and not thumb.startswith("data:") and not Path(thumb).expanduser().is_file():
        yield RuleIssue(ERROR, ("metadata_thumbnail",),
                        f"metadata_thumbnail: {thumb} is not a file; give an image file or a data: URL")
    t = cfg.training
    if t.initial_step is not None and t.initial_epoch is not None:
        yield RuleIssue(WARNING, ("initial_step", "initial_epoch"),
                        "initial_step wins over initial_epoch (as in sd-scripts)")
    if t.initial_step is not None and t.max_train_steps is not None and t.initial_step >= t.max_train_steps:
        yield RuleIssue(ERROR, ("initial_step", "max_train_steps"),
                        f"initial_step {t.initial_step} must be below max_train_steps {t.max_train_steps}")
    if t.skip_until_initial_step and t.initial_step is None and t.initial_epoch is None:
        yield RuleIssue(WARNING, ("skip_until_initial_step",),
                        "skip_until_initial_step does nothing without initial_step or initial_epoch")
    if cfg.precision.full_fp16 and cfg.optimizer.optimizer_type in ("AdamW", "Prodigy"):
        yield RuleIssue(WARNING, ("full_fp16", "optimizer_type"),
                        "full_fp16 with torch's AdamW keeps the optimizer state in fp16, where its eps (1e-8) is 0: "
                        "steps with a zero gradient turn to NaN; use AdamW8bit (its state math is fp32)",
                        {"optimizer_type": "AdamW8bit"})
    if (cfg.precision.fp8_base or cfg.precision.fp8_base_unet) and not cfg.precision.gradient_checkpointing:
        yield RuleIssue(WARNING, ("fp8_base", "gradient_checkpointing"),
                        "fp8_base without gradient_checkpointing saves little at the peak: each layer's bf16 copy "
                        "of its weight is kept for the backward pass; turn gradient_checkpointing on",
                        {"gradient_checkpointing": True})
