"""Resume: find the newest complete saved state of a run, and decide whether a (possibly
changed) config may continue it.

A state folder counts only when its COMPLETE marker and every file the format requires are
there; unfinished ones (a save cut short by a crash, `kill -9` or a full disk) are skipped and
reported, never deleted here, never loaded.

The policy: what fixes the shape or meaning of the saved tensors and of the step count cannot
change (the base model, the network's shape, the optimizer and schedule kind, the data and its
order). What only steers the rest of the run may change (more steps or epochs, learning rates,
save/sample frequency, logging...), and each change is listed so the person sees what differs
from the run they stopped.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.config.schema import RunConfig
from engine.errors import ConfigError, OutputError
from engine.outputs import checkpoint

REQUIRED_STATE_FILES = ("lora.safetensors", "optimizer.pt", "scheduler.pt", "rng.pt", "rng.json",
                        "progress.json", checkpoint.COMPLETE_MARKER)

# dotted option -> why it cannot change on resume
FIXED_OPTIONS: dict[str, str] = {
    "model.pretrained_model_name_or_path": "the LoRA was trained against this base model",
    "model.vae": "the latents the LoRA learned from come from this VAE",
    "model.v2": "the base model's kind is fixed",
    "model.v_parameterization": "the prediction type is fixed",
    "network.network_module": "the saved weights belong to this network type",
    "network.network_dim": "the network's shape is fixed by the saved weights",
    "network.network_alpha": "alpha scales the saved weights",
    "network.network_args": "conv_dim/conv_alpha fix the network's shape",
    "network.network_train_unet_only": "which modules exist is fixed by the saved weights",
    "network.network_train_text_encoder_only": "which modules exist is fixed by the saved weights",
    "network.dim_from_weights": "the network's shape is fixed by the saved weights",
    "network.base_weights": "the saved weights were trained on a base with these LoRAs merged",
    "network.base_weights_multiplier": "the saved weights were trained on a base with these LoRAs merged",
    "training.ema_decay": "the saved EMA weights were averaged with this decay (or none were kept)",
    "optimizer.optimizer_type": "the saved optimizer state belongs to this optimizer",
    "optimizer.lr_scheduler": "the saved schedule state belongs to this scheduler",
    "optimizer.lr_scheduler_type": "the saved schedule state belongs to this scheduler class",
    "training.seed": "the data order and noise of the remaining steps follow the seed",
    "training.train_batch_size": "the saved data position counts batches of this size",
    "training.gradient_accumulation_steps": "the step count means batches x this",
    "dataset.dataset_config": "the saved data position belongs to this dataset",
}
# Options that do not matter once a run is under way, so they are neither refused nor listed.
IGNORED_OPTIONS = {"saving.output_dir", "schema_version", "saving.resume"}
IGNORED_NOTES = {
    "network.network_weights": "ignored on resume: the saved state's weights are used",
}


@dataclass(frozen=True)
class Change:
    """One option that differs between the saved state's config and this run's, and why it is allowed or refused."""
    key: str
    old: Any
    new: Any
    note: str = ""
    too_short: bool = False  # not a changed option: the length asked for is already done

    def __str__(self) -> str:
        if self.too_short:
            return f"{self.key} = {_show(self.new)}: {self.note}"
        text = f"{self.key}: {_show(self.old)} → {_show(self.new)}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class ConfigDiff:
    """Differences between a saved config and a resumed run's: those that would change the result (refused) and the
    rest."""
    refused: tuple[Change, ...] = ()
    allowed: tuple[Change, ...] = ()


@dataclass(frozen=True)
class IncompleteState:
    """A saved state folder that cannot be resumed from, and why."""
    path: Path
    reason: str

    def __str__(self) -> str:
        return f"ignoring incomplete saved state {self.path.name} ({self.reason})"


@dataclass
class ResumePoint:
    """The state a resumed run starts from, and what the person should be told about it."""

    path: Path
    progress: checkpoint.Position
    saved_config: Optional[RunConfig]
    incomplete: list[IncompleteState] = field(default_factory=list)
    allowed: list[Change] = field(default_factory=list)
    removed_temp_files: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """What the person is told on resuming: states passed over, temp files removed, options changed."""
        lines = [str(item) for item in self.incomplete]
        if self.removed_temp_files:
            lines.append(f"removed {len(self.removed_temp_files)} temporary file(s) of a save that never finished: "
                         + ", ".join(self.removed_temp_files))
        if self.allowed:
            lines.append("resuming with changed options: " + "; ".join(str(c) for c in self.allowed))
        return lines


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    return json.dumps(value) if isinstance(value, (str, list)) else str(value)


# ---------------------------------------------------------------- finding states

def missing_files(folder: Path) -> list[str]:
    """The files a saved state needs that `folder` lacks."""
    return [name for name in REQUIRED_STATE_FILES if not (folder / name).is_file()]


def scan_states(output_dir: Path) -> tuple[list[Path], list[IncompleteState]]:
    """(complete state folders oldest first, incomplete ones) under output_dir/state."""
    root = checkpoint.state_root(output_dir)
    if not root.is_dir():
        return [], []
    complete, incomplete = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        final = re.fullmatch(r"step-\d{8}", folder.name)
        staging = re.fullmatch(r"\.step-\d{8}\.tmp", folder.name)
        if not (final or staging):
            continue
        if staging:
            incomplete.append(IncompleteState(folder, "a save that never finished"))
            continue
        missing = missing_files(folder)
        if missing:
            reason = ("no COMPLETE marker" if checkpoint.COMPLETE_MARKER in missing
                      else "missing " + ", ".join(missing))
            incomplete.append(IncompleteState(folder, reason))
        else:
            complete.append(folder)
    return sorted(complete, key=lambda p: p.name), incomplete


def find_resume_point(output_dir: Path) -> ResumePoint:
    """The newest complete state whose progress and config read back; OutputError when none."""
    output_dir = Path(output_dir)
    complete, incomplete = scan_states(output_dir)
    for folder in reversed(complete):
        try:
            progress = checkpoint.Position.from_record(json.loads((folder / "progress.json").read_text()))
            saved = _saved_config(folder)
        except (OSError, ValueError, TypeError, ConfigError) as exc:
            incomplete.append(IncompleteState(folder, f"unreadable: {exc}"))
            continue
        return ResumePoint(path=folder, progress=progress, saved_config=saved, incomplete=incomplete)
    detail = "; ".join(str(item) for item in incomplete)
    raise OutputError(
        f"no complete saved state in {output_dir}" + (f" ({detail})" if detail else ""),
        hint="a run saves its state on a stop request (Ctrl-C), on save now, and with every save when "
             "save_state = true; without one, start a new run with network_weights set to its last LoRA")


def _saved_config(folder: Path) -> Optional[RunConfig]:
    path = folder / "config.toml"
    if not path.is_file():
        return None
    from engine.config.toml_file import loads_config

    return loads_config(path.read_text(encoding="utf-8"))


def load_state(point: ResumePoint) -> checkpoint.LoadedState:
    """The tensors of `point`; a file that fails to read names the folder."""
    try:
        return checkpoint.load_state(point.path)
    except Exception as exc:  # safetensors / torch raise several kinds for a damaged file
        raise OutputError(f"the saved state {point.path} cannot be read ({exc})",
                          hint=f"move {point.path} aside to resume from the one before it") from exc


# ---------------------------------------------------------------- the policy

def _flat(cfg: RunConfig) -> dict[str, Any]:
    out = {}
    for section, values in cfg.model_dump().items():
        if isinstance(values, dict):
            out.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            out[section] = values
    return out


def compare_configs(saved: RunConfig, new: RunConfig, progress: Optional[checkpoint.Position] = None, *,
                    dataset_checked: bool = False) -> ConfigDiff:
    """What differs between the config a state was saved with and the one resuming it.
    `dataset_checked`: the data itself will be compared (so a moved dataset_config may pass)."""
    old_values, new_values = _flat(saved), _flat(new)
    refused, allowed = [], []
    for key, old in old_values.items():
        value = new_values.get(key)
        if key in IGNORED_OPTIONS or value == old:
            continue
        if key in FIXED_OPTIONS and not (key == "dataset.dataset_config" and dataset_checked):
            refused.append(Change(key, old, value, FIXED_OPTIONS[key]))
        elif key == "dataset.dataset_config":
            allowed.append(Change(key, old, value, "the data must be the same; checked after the scan"))
        else:
            allowed.append(Change(key, old, value, IGNORED_NOTES.get(key, "")))
    if progress is not None:
        refused.extend(_length_problems(new, progress))
        allowed.extend(_schedule_notes(saved, new))
    return ConfigDiff(tuple(refused), tuple(allowed))


def _length_problems(new: RunConfig, progress: checkpoint.Position) -> list[Change]:
    t = new.training
    if t.max_train_steps is not None and t.max_train_steps <= progress.global_step:
        return [Change("training.max_train_steps", progress.global_step, t.max_train_steps,
                       f"the run is already at step {progress.global_step}; set more steps to continue "
                       f"(e.g. --set max_train_steps={progress.global_step + max(1, progress.global_step // 2)})",
                       too_short=True)]
    if t.max_train_steps is None and t.max_train_epochs is not None and t.max_train_epochs <= progress.epoch:
        return [Change("training.max_train_epochs", progress.epoch, t.max_train_epochs,
                       f"the run has already done {progress.epoch} epochs; set more epochs to continue "
                       f"(e.g. --set max_train_epochs={progress.epoch + 1})", too_short=True)]
    return []


def _schedule_notes(saved: RunConfig, new: RunConfig) -> list[Change]:
    length_changed = (saved.training.max_train_steps, saved.training.max_train_epochs) != (
        new.training.max_train_steps, new.training.max_train_epochs)
    if length_changed and new.optimizer.lr_scheduler not in ("constant", "constant_with_warmup"):
        return [Change("optimizer.lr_scheduler", saved.optimizer.lr_scheduler, new.optimizer.lr_scheduler,
                       "the schedule follows the new length from here on, so the rate may jump")]
    return []


def check_resume_config(point: ResumePoint, new: RunConfig, *, dataset_checked: bool = False) -> list[Change]:
    """Raise ConfigError listing every refused change; return the allowed ones (also kept in
    `point.allowed`). A state without its config cannot be checked and is taken as is."""
    if point.saved_config is None:
        return []
    diff = compare_configs(point.saved_config, new, point.progress, dataset_checked=dataset_checked)
    if diff.refused:
        raise _refusal(point, diff.refused, last_good=_lora_of(point))  # the run is intact: name its LoRA
    point.allowed = list(diff.allowed)
    return point.allowed


def _refusal(point: ResumePoint, refused: tuple[Change, ...], last_good: str) -> ConfigError:
    """One message: options that cannot change, and/or a length the run has already reached
    (never called a difference when nothing differs)."""
    changed = [c for c in refused if not c.too_short]
    short = [c for c in refused if c.too_short]
    parts, hints = [], []
    if changed:
        parts.append("these options differ from the saved run and cannot change:\n"
                     + "\n".join(f"  - {change}" for change in changed))
        hints.append("set them back to the saved values (they are in " + str(point.path / "config.toml") + "), or "
                     "start a new run in another output_dir with network_weights set to this run's last LoRA")
    if short:
        parts.append("the run has already trained as long as asked:\n" + "\n".join(f"  - {c}" for c in short))
        hints.append("ask for more steps or epochs than the run has done" + ("" if changed else
                     ", or start a new run in another output_dir with network_weights set to this run's last LoRA"))
    hint = "; ".join(hints)
    if last_good:
        hint = hint.replace("this run's last LoRA", f'"{last_good}"')
    return ConfigError(f"cannot resume from {point.path.name}: " + "\n".join(parts), key=refused[0].key,
                       hint=hint, step=point.progress.global_step, last_good=last_good)


def _lora_of(point: ResumePoint) -> str:
    """The LoRA file saved with the state (same step), or the newest one in the folder."""
    output_dir = point.path.parent.parent
    same_step = sorted(output_dir.glob(f"*-step{point.progress.global_step:08d}.safetensors"))
    found = same_step or sorted(output_dir.glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else ""


def check_dataset_identity(point: ResumePoint, manifest_hash: str) -> None:
    """The scanned data must be what the state was trained on (file names, sizes, captions)."""
    saved = getattr(point.progress, "dataset_hash", "")
    if saved and manifest_hash and saved != manifest_hash:
        raise ConfigError(
            "the dataset differs from the one the saved state was trained on (images, sizes or captions changed)",
            key="dataset.dataset_config",
            hint="restore the original files to resume exactly, or start a new run with network_weights "
                 "set to this run's last LoRA")


def prepare_resume(output_dir: Path, new: RunConfig) -> ResumePoint:
    """Find the state and check the config against it, before anything heavy loads."""
    point = find_resume_point(output_dir)
    has_hash = bool(getattr(point.progress, "dataset_hash", ""))
    check_resume_config(point, new, dataset_checked=has_hash)
    point.removed_temp_files = remove_temp_files(output_dir)
    return point


def remove_temp_files(output_dir: Path) -> list[str]:
    """Temporary LoRA files (engine.storage.atomic's `.NAME.XXXX.tmp`) a killed run left behind: never
    loadable, never under a final name, safe to delete once the run is being resumed."""
    removed = []
    for path in sorted(Path(output_dir).glob(".*.safetensors.*.tmp")):
        try:
            path.unlink()
            removed.append(path.name)
        except OSError:
            pass
    return removed


# ---------------------------------------------------------------- an output folder already used

def failed_before_training(output_dir: Path) -> Optional[str]:
    """The failure message when `output_dir`'s only run ended with Failed before training began
    (no RunStarted, no LoRA file, no state): such a folder holds nothing worth keeping. None
    otherwise (no run there, a run that trained, or one still starting)."""
    output_dir = Path(output_dir)
    log = output_dir / "events.jsonl"
    if not log.is_file() or checkpoint.state_root(output_dir).exists():
        return None
    if any(output_dir.glob("*.safetensors")):
        return None
    last = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") == "RunStarted":
            return None
        last = record
    if last is None or last.get("type") != "Failed":
        return None
    return last.get("message", "") or last.get("kind", "failed")


def existing_run_hint(output_dir: Path) -> str:
    """What to do about a run already in `output_dir`: resume it when it has a complete state;
    otherwise (stopped before any state was saved) another output_dir, or its last LoRA."""
    complete, _ = scan_states(Path(output_dir))
    if complete:
        return f"continue it with `sdxl-tui resume {output_dir}`, or set another output_dir"
    loras = sorted(Path(output_dir).glob("*.safetensors"), key=lambda p: p.stat().st_mtime)
    start_from = (f", or start one that continues from its last LoRA (network_weights = \"{loras[-1]}\")"
                  if loras else "")
    return (f"it has no saved state to resume from: set another output_dir{start_from}; "
            f"to reuse the folder, move its files away first")
