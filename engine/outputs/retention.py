"""Which saves a run keeps: sd-scripts' `save_last_n_*` and `save_n_epoch_ratio` options, and
the LoRA of an earlier end kept under its step-numbered name when a resume ends.

sd-scripts' meanings (library/train_util.py get_remove_epoch_no / get_remove_step_no,
save_and_remove_state_stepwise, train_network.py):
  - `save_last_n_epochs`: keep the newest N epoch saves;
  - `save_last_n_steps`: a count of STEPS, not files: a step save older than N steps before the
    current step is removed (every=10, N=30: at step 50 the saves 20..50 remain);
  - `save_last_n_epochs_state` / `save_last_n_steps_state`: the same for states, defaulting to
    the LoRA values;
  - `save_n_epoch_ratio`: save_every_n_epochs = floor(num_train_epochs / ratio), at least 1.
Our states all live in `state/step-NNNNNNNN`; with neither state option set the newest
`checkpoint.STATES_KEPT` are kept, as before.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

from engine.outputs import checkpoint


def epoch_save_interval(saving: Any, total_epochs: int) -> Optional[int]:
    """Save a LoRA every this many epochs (None: no epoch saves). save_n_epoch_ratio wins over
    save_every_n_epochs, as in sd-scripts."""
    if saving.save_n_epoch_ratio:
        return max(1, total_epochs // saving.save_n_epoch_ratio)
    return saving.save_every_n_epochs


def step_saves(output_dir: Path, output_name: str) -> list[tuple[int, Path]]:
    """(step, path) of this output name's step-numbered LoRA files, oldest first."""
    pattern = re.compile(rf"^{re.escape(output_name)}-step(\d{{8}})\.safetensors$")
    found = [(int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := pattern.match(p.name))]
    return sorted(found)


def prune_step_files(output_dir: Path, output_name: str, current_step: int, last_n_steps: int) -> list[Path]:
    """Remove step saves older than `last_n_steps` steps before `current_step`; returns them."""
    removed = [path for step, path in step_saves(output_dir, output_name) if step < current_step - last_n_steps]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def state_keep_count(saving: Any) -> Optional[int]:
    """How many newest states the state writer keeps by count (None: do not prune by count,
    the step rule of `prune_states_by_step` applies)."""
    if state_last_n_steps(saving):
        return None
    last_n_epochs = saving.save_last_n_epochs_state or saving.save_last_n_epochs
    return last_n_epochs or checkpoint.STATES_KEPT


def state_last_n_steps(saving: Any) -> Optional[int]:
    """How many step states to keep: save_last_n_steps_state, else save_last_n_steps (as sd-scripts); None keeps all."""
    return saving.save_last_n_steps_state or saving.save_last_n_steps


def prune_states_by_step(output_dir: Path, saving: Any, current_step: int) -> list[Path]:
    """With save_last_n_steps(_state): remove complete states older than N steps before
    `current_step` (never the newest one, which a resume needs)."""
    last_n = state_last_n_steps(saving)
    if not last_n:
        return []
    states = checkpoint.complete_states(output_dir)[:-1]
    removed = [p for p in states if int(p.name.split("-")[1]) < current_step - last_n]
    for folder in removed:
        checkpoint.remove_state(folder)
    return removed


def keep_previous_final(output_dir: Path, output_name: str) -> Optional[Path]:
    """Before a resumed run writes `NAME.safetensors` again, move the one an earlier end wrote
    to its step-numbered name (`NAME-stepNNNNNNNN.safetensors`, step from its ss_steps), so no
    earlier result is lost. Without ss_steps (no_metadata) it gets a time-stamped name.
    Returns the new path, or None when there was nothing to keep."""
    final = Path(output_dir) / checkpoint.final_file_name(output_name)
    if not final.is_file():
        return None
    step = _saved_step(final)
    if step is not None:
        target = final.with_name(checkpoint.step_file_name(output_name, step))
    else:
        target = final.with_name(f"{output_name}-before-{time.strftime('%Y%m%d%H%M%S')}.safetensors")
    if target.exists():  # the same step was already saved under that name (e.g. by a stop)
        return target
    final.replace(target)
    return target


def _saved_step(path: Path) -> Optional[int]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            value = (handle.metadata() or {}).get("ss_steps")
        return int(value) if value is not None else None
    except Exception:  # unreadable header: still keep the file, under a time-stamped name
        return None
