"""Typed, frozen events: the only way the engine tells the world what it is doing.

Every event serialises to one JSON object (`to_json`) with a `type` field, and back
(`event_from_json`), so `events.jsonl` replays into the same objects the live run emitted.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

# Phases, in the order a run usually passes through them.
LOADING_MODEL = "loading_model"
SCANNING_DATASET = "scanning_dataset"
CACHING_LATENTS = "caching_latents"
CACHING_TEXT = "caching_text_encoder_outputs"
TRAINING = "training"
SAMPLING = "sampling"
SAVING = "saving"
FINISHED = "finished"
FAILED = "failed"


@dataclass(frozen=True)
class Event:
    """Base of every event."""
    time: float = 0.0  # wall-clock seconds (time.time()) when emitted

    def to_json(self) -> str:
        """One JSON object with a `type` key naming the class (a line of events.jsonl)."""
        return json.dumps({"type": type(self).__name__, **dataclasses.asdict(self)})


@dataclass(frozen=True)
class Phase(Event):
    """A new phase began; `total` is the item count of a phase with its own progress."""
    name: str = ""
    total: Optional[int] = None
    detail: str = ""


@dataclass(frozen=True)
class PhaseProgress(Event):
    """Progress inside a phase (e.g. caching latents 312 / 1000 images at 12.5 images/s, 55 s
    left; loading the model 2 / 6 components, `detail` "text encoder 2")."""
    name: str = ""
    done: int = 0
    total: int = 0
    unit: str = ""  # what `done` counts: "images", "components"
    rate: float = 0.0  # units per second since the phase began (0: not yet known)
    eta_seconds: Optional[float] = None  # seconds left at that rate
    detail: str = ""


@dataclass(frozen=True)
class RunStarted(Event):
    """Training begins (after set-up): its length, batch size and processes, and where it resumed."""
    output_dir: str = ""
    total_steps: int = 0
    total_epochs: int = 0
    steps_per_epoch: int = 0
    batch_size: int = 1
    num_processes: int = 1
    resumed_from_step: int = 0
    config_path: str = ""
    gradient_accumulation_steps: int = 1
    versions: dict[str, str] = field(default_factory=dict)  # package -> version (engine.versions)

    @property
    def effective_batch_size(self) -> int:
        """Images per optimizer step: batch size per process × processes × accumulation."""
        return self.batch_size * self.num_processes * self.gradient_accumulation_steps


@dataclass(frozen=True)
class Memory:
    """CUDA figures in bytes where CUDA exists; otherwise only process RSS."""
    device: str = "cpu"
    allocated: Optional[int] = None
    reserved: Optional[int] = None
    peak: Optional[int] = None
    total: Optional[int] = None
    rss: Optional[int] = None


@dataclass(frozen=True)
class Step(Event):
    """Metrics at a logging interval (the only place the loop syncs with the device)."""
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    loss: float = 0.0
    smoothed_loss: float = 0.0
    lr: dict[str, float] = field(default_factory=dict)  # group -> rate of the next step (d*lr for D-Adaptation/Prodigy)
    seconds_per_step: float = 0.0
    images_per_second: float = 0.0
    eta_seconds: float = 0.0
    memory: Memory = field(default_factory=Memory)
    # scale_weight_norms (sd-scripts' "Keys Scaled" / "Average key norm", at the last step); None when off
    keys_scaled: Optional[int] = None
    mean_norm: Optional[float] = None
    max_norm: Optional[float] = None


@dataclass(frozen=True)
class Validation(Event):
    """The validation loss: the training loss function on the held-out (validation_split) images at
    fixed timesteps with fixed noise, no gradients, dropouts off (engine/train/validation.py).
    `kind` is "step" (validate_every_n_steps) or "epoch" (end of an epoch), as sd-scripts logs them."""
    step: int = 0
    epoch: int = 0  # 1-based: the epoch this evaluation falls in
    loss: float = 0.0
    kind: str = "epoch"
    batches: int = 0  # validation batches evaluated (each at every fixed timestep)
    seconds: float = 0.0  # time it took


@dataclass(frozen=True)
class Saved(Event):
    """A LoRA file or a training state was written."""
    path: str = ""
    step: int = 0
    epoch: int = 0
    kind: str = "lora"  # "lora" or "state"


@dataclass(frozen=True)
class Sample(Event):
    """A sample image was written."""
    path: str = ""
    prompt: str = ""
    step: int = 0


@dataclass(frozen=True)
class Warning_(Event):
    """Something a person should know that does not stop the run."""
    message: str = ""


@dataclass(frozen=True)
class Log(Event):
    """A log line (our own or a library's), with its level name."""
    message: str = ""
    level: str = "info"


@dataclass(frozen=True)
class Finished(Event):
    """The run ended normally or after a requested stop."""
    step: int = 0
    lora_path: str = ""
    stopped: bool = False  # True when it ended on a stop request
    seconds: float = 0.0


@dataclass(frozen=True)
class Failed(Event):
    """The run ended with an error: its message, hint, step, and the newest LoRA file that survived."""
    message: str = ""
    hint: str = ""
    step: int = 0
    kind: str = "error"  # error class name, for exit codes and UI wording
    last_good: str = ""  # newest LoRA that survived


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (Phase, PhaseProgress, RunStarted, Step, Validation, Saved, Sample, Warning_, Log, Finished, Failed)
}

Emit = Callable[[Event], None]


def _known(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The fields `cls` has: a newer version may add fields, and its lines must still read."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def event_from_json(line: str) -> Event:
    """The event of one `events.jsonl` line. Fields this version does not know are ignored; an
    event type it does not know becomes a debug `Log` holding the line. Raises ValueError for a
    line that is not a JSON object."""
    raw: dict[str, Any] = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError(f"not an event: {line[:80]!r}")
    name = raw.pop("type", "")
    cls = EVENT_TYPES.get(name)
    if cls is None:
        return Log(time=float(raw.get("time", 0.0) or 0.0), level="debug",
                   message=f"event {name or '?'} from a newer sdxl-tui: {line.strip()[:300]}")
    if cls is Step and isinstance(raw.get("memory"), dict):
        raw["memory"] = Memory(**_known(Memory, raw["memory"]))
    return cls(**_known(cls, raw))
