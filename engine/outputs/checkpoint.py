"""What a run writes to keep its work: LoRA files (named as sd-scripts names them) and state
folders for resume. The state format lives here and only here.

A state folder `output_dir/state/step-00000120/` holds:
  lora.safetensors   the network's tensors in fp32 (kohya keys)
  optimizer.pt       optimizer state dict (tensors, numbers, strings; loaded weights_only)
  scheduler.pt       lr scheduler state dict
  scaler.pt          fp16 grad scaler state (only when one is used)
  rng.pt             torch CPU/CUDA generator states; rng.json: Python and NumPy states
  progress.json      global step, epoch, batches done in that epoch, format version
  config.toml        the config the state belongs to
  ema.safetensors    EMA shadow weights (only with ema_decay; lora.safetensors stays the raw weights)
  COMPLETE           written last: a folder without it is unfinished and ignored
It is written under a temporary name and renamed into place, so a crash never leaves a
half-written folder under a final name.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

STATE_FORMAT = 1
STATE_ROOT = "state"
COMPLETE_MARKER = "COMPLETE"
STATES_KEPT = 2  # newest complete states kept; older ones are removed after a new one lands


# ---------------------------------------------------------------- LoRA files

def epoch_file_name(output_name: str, epoch: int) -> str:
    """sd-scripts' name for an epoch save: NAME-000003.safetensors (1-based epoch)."""
    return f"{output_name}-{epoch:06d}.safetensors"


def step_file_name(output_name: str, step: int) -> str:
    """sd-scripts' name for a step save: NAME-step00000120.safetensors."""
    return f"{output_name}-step{step:08d}.safetensors"


def final_file_name(output_name: str) -> str:
    """The final LoRA: NAME.safetensors."""
    return f"{output_name}.safetensors"


def save_lora_file(path: Path, network, metadata: dict[str, str], save_precision: str) -> Path:
    """Write the LoRA atomically in `save_precision` (engine/lora/file.py); returns `path`."""
    from engine.lora.file import save_lora

    return save_lora(path, network, metadata, save_precision)


def prune_epoch_files(output_dir: Path, output_name: str, keep: int) -> list[Path]:
    """Delete all but the newest `keep` epoch saves of this output name; returns what was removed."""
    pattern = re.compile(rf"^{re.escape(output_name)}-(\d{{6}})\.safetensors$")
    found = sorted((int(m.group(1)), p) for p in Path(output_dir).iterdir() if (m := pattern.match(p.name)))
    removed = [path for _, path in found[:-keep]] if keep > 0 else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


# ---------------------------------------------------------------- state folders

@dataclass
class Position:
    """Where training stands after an optimizer step: the loop (engine/train/loop.py) moves it,
    a state folder saves it (progress.json: the first four fields), a resume starts from it, and
    engine/train/run.py reads it after a failure (the step and the last good LoRA for the message)."""

    global_step: int = 0
    epoch: int = 0  # 0-based epoch the next batch belongs to
    batches_done_in_epoch: int = 0  # batches of that epoch already consumed
    dataset_hash: str = ""  # ScannedDataset.manifest_hash: resume checks the data is the same
    last_lora: str = ""  # the newest LoRA file this run wrote (not saved in a state)
    stopped: bool = False  # a stop request ended the loop (not saved in a state)

    @property
    def current_epoch(self) -> int:
        """1-based epoch of the last step taken (as sd-scripts records ss_epoch)."""
        return self.epoch + (1 if self.batches_done_in_epoch else 0)

    def to_record(self) -> dict[str, Any]:
        """progress.json's content (format STATE_FORMAT)."""
        return {"global_step": self.global_step, "epoch": self.epoch,
                "batches_done_in_epoch": self.batches_done_in_epoch, "format": STATE_FORMAT,
                "dataset_hash": self.dataset_hash}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Position":
        """Read progress.json's content back; TypeError on a key the format does not have."""
        fields = dict(record)
        fields.pop("format", None)
        unknown = set(fields) - {"global_step", "epoch", "batches_done_in_epoch", "dataset_hash"}
        if unknown:
            raise TypeError(f"unknown progress field(s): {', '.join(sorted(unknown))}")
        return cls(**fields)


@dataclass
class LoadedState:
    """A state folder read back: the LoRA tensors (fp32), optimizer / scheduler / scaler state dicts,
    RNG states and the position to continue from."""
    path: Path
    progress: Position
    lora: dict
    optimizer: dict
    scheduler: dict
    scaler: Optional[dict]
    rng: dict
    ema: Optional[dict] = None


def state_root(output_dir: Path) -> Path:
    """output_dir/state, where state folders live."""
    return Path(output_dir) / STATE_ROOT


def state_dir_name(step: int) -> str:
    """step-00000120: the folder name of the state saved after `step`."""
    return f"step-{step:08d}"


def capture_rng() -> dict[str, Any]:
    """Python, NumPy, torch CPU (and CUDA) generator states, so a resume draws what the run would have."""
    import numpy as np
    import torch

    np_state = np.random.get_state()
    out = {
        "python": _to_jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(rng: dict[str, Any]) -> None:
    """Put back what `capture_rng` took."""
    import numpy as np
    import torch

    random.setstate(_to_tuple(rng["python"]))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _to_jsonable(value: Any) -> Any:
    return [_to_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuple(value: Any) -> Any:
    return tuple(_to_tuple(v) for v in value) if isinstance(value, list) else value


def save_state(output_dir: Path, *, network, optimizer, scheduler, scaler, progress: Position,
               config_text: str, saving=None, ema: Optional[dict] = None, keep: Optional[int] = STATES_KEPT) -> Path:
    """Write a complete state folder for `progress`; returns its final path. `keep`: newest
    complete states kept (None: none removed by count; engine/outputs/retention.py). `saving`
    (engine.control.save_progress.SaveProgress) hears of each file written. On any failure the
    unfinished folder is removed and the previous states stay as they were."""
    root = state_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / state_dir_name(progress.global_step)
    staging = root / f".{final.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if saving is not None:
        saving.writing(staging)
    try:
        _write_state_files(staging, network=network, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                           progress=progress, config_text=config_text, saving=saving, ema=ema)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if final.exists():  # a save at the same step (e.g. stop right after a periodic save)
        remove_state(final)
    os.replace(staging, final)
    from engine.storage.atomic import fsync_dir

    fsync_dir(root)
    _prune_states(root, keep)
    return final


def _write_state_files(staging: Path, *, network, optimizer, scheduler, scaler, progress: Position,
                       config_text: str, saving, ema: Optional[dict] = None) -> None:
    import torch
    from safetensors.torch import save

    from engine.storage.atomic import fsync_dir

    def done(name: str) -> None:
        if saving is not None:
            saving.part_done(name)

    # Everything is serialised in memory and written with plain file I/O, so a full disk is an
    # OSError (ENOSPC) for the caller to report, whatever the serialiser's own error would be.
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.kohya_state_dict().items()}
    _write_file(staging / "lora.safetensors", save(tensors))
    if ema is not None:
        _write_file(staging / "ema.safetensors", save(ema))
    done("lora")
    _write_file(staging / "optimizer.pt", _torch_bytes(optimizer.state_dict()))
    done("optimizer")
    _write_file(staging / "scheduler.pt", _torch_bytes(scheduler.state_dict()))
    if scaler is not None:
        _write_file(staging / "scaler.pt", _torch_bytes(scaler.state_dict()))
    rng = capture_rng()
    _write_file(staging / "rng.pt", _torch_bytes({k: rng[k] for k in ("torch", "cuda") if k in rng}))
    _write_file(staging / "rng.json", json.dumps({k: rng[k] for k in ("python", "numpy")}).encode())
    _write_file(staging / "progress.json", json.dumps(progress.to_record()).encode())
    _write_file(staging / "config.toml", config_text.encode("utf-8"))
    done("small files")
    _write_file(staging / COMPLETE_MARKER, b"ok\n")
    fsync_dir(staging)


def _torch_bytes(obj) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def complete_states(output_dir: Path) -> list[Path]:
    """Complete state folders, oldest first."""
    root = state_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir()
             if p.is_dir() and re.fullmatch(r"step-\d{8}", p.name) and (p / COMPLETE_MARKER).exists()]
    return sorted(found, key=lambda p: p.name)


def latest_state(output_dir: Path) -> Optional[Path]:
    """The newest complete state folder, or None."""
    states = complete_states(output_dir)
    return states[-1] if states else None


def _prune_states(root: Path, keep: Optional[int]) -> None:
    """Keep the newest `keep` states; also clear what a killed process left (one save runs at
    a time, so any other unfinished folder is stale)."""
    states = complete_states(root.parent)
    for old in states[:-keep] if keep else []:
        remove_state(old)
    for stale in list(root.glob(".step-*.tmp")) + list(root.glob(".step-*.deleting")):
        shutil.rmtree(stale, ignore_errors=True)


def remove_state(folder: Path) -> None:
    """Rename out of the way first: a kill during the removal must not leave a folder under its
    final name with COMPLETE still in it but files gone."""
    doomed = folder.with_name(f".{folder.name}.deleting")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def load_state(path: Path) -> LoadedState:
    """Read a complete state folder (torch.load with weights_only); a damaged folder raises what the
    readers raise (engine/outputs/resume.py checks the folder's files before this)."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    progress = Position.from_record(json.loads((path / "progress.json").read_text()))
    rng = dict(torch.load(path / "rng.pt", weights_only=True))
    rng.update(json.loads((path / "rng.json").read_text()))
    scaler_file = path / "scaler.pt"
    ema_file = path / "ema.safetensors"
    return LoadedState(
        path=path,
        progress=progress,
        lora=load_file(str(path / "lora.safetensors")),
        optimizer=torch.load(path / "optimizer.pt", weights_only=True),
        scheduler=torch.load(path / "scheduler.pt", weights_only=True),
        scaler=torch.load(scaler_file, weights_only=True) if scaler_file.exists() else None,
        rng=rng,
        ema=load_file(str(ema_file)) if ema_file.exists() else None,
    )
