"""Cross-option rules for the saving options of issue 14 (keeping saves, metadata), kept apart
from rules.py so the shared file only lists them."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from engine.config.rules import ERROR, WARNING, RuleIssue
from engine.config.schema import RunConfig


def saving_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
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
