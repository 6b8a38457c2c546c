"""The run as a person sees it: engine events folded into one `RunView` snapshot.

UI-free and clock-free (the caller passes `now`), so the Textual dashboard, the Rich console
view and `watch`'s replay of events.jsonl all show the same figures, and tests can pin them.
Histories are bounded: the loss series halves its resolution (pairwise means) whenever it
outgrows `max_points`, so the chart always covers every step at a fixed cost.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from engine.events import types as ev
from sdxl_tui.run_format import (  # noqa: F401  (the views import them from here)
    display_path,
    format_bytes,
    format_duration,
    format_loss,
    format_lr,
    format_rate,
    plural,
    validation_text,
)
from sdxl_tui.series import Downsampled, resample, sparkline  # noqa: F401  (the views import them from here)

PHASE_LABELS = {
    ev.LOADING_MODEL: "Loading model",
    ev.SCANNING_DATASET: "Scanning dataset",
    ev.CACHING_LATENTS: "Caching latents",
    ev.CACHING_TEXT: "Caching text-encoder outputs",
    ev.TRAINING: "Training",
    ev.SAMPLING: "Sampling",
    ev.SAVING: "Saving",
    ev.FINISHED: "Finished",
    ev.FAILED: "Failed",
}
MEMORY_HISTORY = 120


@dataclass(frozen=True)
class PhaseView:
    """The current phase as shown: name, items done of total, unit, rate (units/s) and ETA (seconds)."""
    name: str
    done: int = 0
    total: Optional[int] = None
    detail: str = ""
    unit: str = ""
    rate: float = 0.0  # units per second (PhaseProgress.rate)
    eta_seconds: Optional[float] = None

    @property
    def rate_eta_text(self) -> str:
        """"12.3/s  eta 56s" once the engine has reported a rate; "" before."""
        if self.rate <= 0:
            return ""
        text = f"{self.rate:.1f}/s" if self.rate >= 1 else f"{1 / self.rate:.1f}s each"
        if self.eta_seconds is not None and self.total and self.done < self.total:
            text += f"  eta {format_duration(self.eta_seconds)}"
        return text

    @property
    def label(self) -> str:
        """The phase's display name ("Caching latents"); unknown names are de-underscored and capitalised."""
        return PHASE_LABELS.get(self.name, self.name.replace("_", " ").capitalize())

    @property
    def fraction(self) -> Optional[float]:
        """Done / total clamped to 1.0, or None when the total is unknown (an indeterminate bar)."""
        return min(1.0, self.done / self.total) if self.total else None


@dataclass(frozen=True)
class LogLine:
    """One log-pane line: event time (Unix seconds), level (info / warning / error) and text."""
    time: float
    level: str  # "info", "warning", "error"
    message: str


@dataclass(frozen=True)
class FinalState:
    """How the run ended (finished / stopped / failed): step, LoRA path, seconds, and a failure's details."""
    status: str  # "finished", "stopped" or "failed"
    step: int = 0
    lora_path: str = ""
    seconds: float = 0.0
    message: str = ""
    hint: str = ""
    kind: str = ""
    last_good: str = ""


@dataclass(frozen=True)
class RunView:
    """Frozen snapshot of the run for every view; times are Unix seconds, memory figures bytes."""
    output_dir: str = ""
    config_path: str = ""
    phase: Optional[PhaseView] = None
    step: int = 0
    total_steps: int = 0
    epoch: int = 0
    total_epochs: int = 0
    batch_size: int = 1
    resumed_from_step: int = 0
    loss: Optional[float] = None
    smoothed_loss: Optional[float] = None
    loss_steps: tuple[int, ...] = ()
    loss_raw: tuple[float, ...] = ()
    loss_smooth: tuple[float, ...] = ()
    validation_loss: Optional[float] = None  # the newest validation loss (engine/train/validation.py)
    validation_steps: tuple[int, ...] = ()
    validation_losses: tuple[float, ...] = ()
    lr: tuple[tuple[str, float], ...] = ()
    weight_norms: Optional[tuple[int, float, float]] = None  # scale_weight_norms: keys scaled, mean, max
    seconds_per_step: float = 0.0
    images_per_second: float = 0.0
    eta_seconds: Optional[float] = None
    memory: Optional[ev.Memory] = None
    memory_history: tuple[int, ...] = ()
    checkpoints: tuple[ev.Saved, ...] = ()
    samples: tuple[ev.Sample, ...] = ()
    warnings: tuple[str, ...] = ()
    log: tuple[LogLine, ...] = ()
    log_total: int = 0  # lines ever logged: lets a log widget append only what is new
    final: Optional[FinalState] = None
    started_at: Optional[float] = None
    last_event_at: Optional[float] = None
    now: float = 0.0
    events_seen: int = 0

    @property
    def running(self) -> bool:
        """True until a Finished or Failed event has been seen."""
        return self.final is None

    @property
    def fraction(self) -> float:
        """Optimizer steps done / total, clamped to 1.0 (0.0 before the total is known)."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    @property
    def elapsed(self) -> float:
        """Seconds since the first event: the engine's figure once finished, else up to `now` (frozen at the end)."""
        if self.final is not None and self.final.seconds:
            return self.final.seconds
        end = self.last_event_at if self.final is not None else self.now
        return max(0.0, (end or 0.0) - self.started_at) if self.started_at is not None else 0.0

    @property
    def rate_text(self) -> str:
        """Training speed as "1.23 it/s" or "4.56 s/it" (tqdm's convention); "–" before the first step."""
        return format_rate(self.seconds_per_step)

    @property
    def latest_sample(self) -> Optional[ev.Sample]:
        """The newest Sample event, or None before any sample image."""
        return self.samples[-1] if self.samples else None

    @property
    def memory_figure(self) -> Optional[int]:
        """The last step's tracked memory in bytes (CUDA allocated, else process RSS); None when unknown."""
        return memory_figure(self.memory) if self.memory else None


def memory_figure(memory: ev.Memory) -> Optional[int]:
    """The one number the history tracks: CUDA allocated where known, else process RSS."""
    return memory.allocated if memory.allocated is not None else memory.rss


@dataclass
class RunModel:
    """Folds events in arrival order; `view(now)` returns the frozen snapshot."""

    output_dir: str = ""
    config_path: str = ""
    max_points: int = 2048
    max_log_lines: int = 1000
    _fields: dict = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._loss = Downsampled(2, self.max_points)
        self._validation = Downsampled(1, self.max_points)
        self._memory: deque[int] = deque(maxlen=MEMORY_HISTORY)
        self._log: deque[LogLine] = deque(maxlen=self.max_log_lines)
        self._log_total = 0
        self._checkpoints: list[ev.Saved] = []
        self._samples: list[ev.Sample] = []
        self._warnings: list[str] = []
        self._last_step: Optional[ev.Step] = None
        self._ema: Optional[float] = None
        self._fields = {"output_dir": self.output_dir, "config_path": self.config_path}
        self.events_seen = 0

    @property
    def final(self) -> Optional[FinalState]:
        """The run's FinalState once it has ended, else None."""
        return self._fields.get("final")

    def apply_all(self, events: Iterable[ev.Event]) -> "RunModel":
        """Fold `events` in order; returns self, so `RunModel().apply_all(events).view()` chains."""
        for event in events:
            self.apply(event)
        return self

    def apply(self, event: ev.Event) -> None:
        """Fold one event (its `_on_<EventType>` handler; unknown types only count and stamp the time)."""
        self.events_seen += 1
        f = self._fields
        if event.time:
            f.setdefault("started_at", event.time)
            f["last_event_at"] = event.time
        handler = getattr(self, "_on_" + type(event).__name__.rstrip("_"), None)
        if handler is not None:
            handler(event)

    def _on_RunStarted(self, e: ev.RunStarted) -> None:
        self._fields.pop("final", None)  # a resumed run appends to the same events.jsonl
        self._fields.update(
            output_dir=e.output_dir or self._fields["output_dir"],
            config_path=e.config_path or self._fields["config_path"],
            total_steps=e.total_steps, total_epochs=e.total_epochs, batch_size=e.batch_size,
            resumed_from_step=e.resumed_from_step, step=e.resumed_from_step,
        )
        self._logline(e.time, "info", f"run started: {e.total_steps} steps, {e.total_epochs} epochs"
                      + (f", resumed at step {e.resumed_from_step}" if e.resumed_from_step else ""))

    def _on_Phase(self, e: ev.Phase) -> None:
        self._fields["phase"] = PhaseView(e.name, 0, e.total, e.detail)
        if e.name not in (ev.FINISHED, ev.FAILED):
            detail = f" ({e.detail})" if e.detail else ""
            self._logline(e.time, "info", f"{PhaseView(e.name).label.lower()}{detail}")

    def _on_PhaseProgress(self, e: ev.PhaseProgress) -> None:
        phase: Optional[PhaseView] = self._fields.get("phase")
        detail = phase.detail if phase and phase.name == e.name else ""
        self._fields["phase"] = PhaseView(e.name, e.done, e.total, e.detail or detail, e.unit, e.rate, e.eta_seconds)

    def _on_Step(self, e: ev.Step) -> None:
        smoothed = e.smoothed_loss
        if smoothed == 0.0 and e.loss != 0.0:  # engine sent no average: keep our own
            self._ema = e.loss if self._ema is None else 0.9 * self._ema + 0.1 * e.loss
            smoothed = self._ema
        if math.isfinite(e.loss) and math.isfinite(smoothed):
            self._loss.add(e.step, e.loss, smoothed)
        figure = memory_figure(e.memory)
        if figure is not None:
            self._memory.append(figure)
        self._fields.update(
            step=e.step, total_steps=e.total_steps or self._fields.get("total_steps", 0), epoch=e.epoch,
            loss=e.loss, smoothed_loss=smoothed, lr=tuple(e.lr.items()),
            seconds_per_step=e.seconds_per_step, images_per_second=e.images_per_second,
            memory=e.memory,
        )
        if e.keys_scaled is not None:
            self._fields["weight_norms"] = (e.keys_scaled, e.mean_norm or 0.0, e.max_norm or 0.0)
        self._last_step = e
        if self._fields.get("phase") is None or self._fields["phase"].name != ev.TRAINING:
            self._fields["phase"] = PhaseView(ev.TRAINING)

    def _on_Validation(self, e: ev.Validation) -> None:
        if math.isfinite(e.loss):
            self._validation.add(e.step, e.loss)
        self._fields["validation_loss"] = e.loss
        self._logline(e.time, "info", validation_text(e))

    def _on_Saved(self, e: ev.Saved) -> None:
        self._checkpoints.append(e)
        self._logline(e.time, "info", f"saved {e.kind} at step {e.step}: {self._short(e.path)}")

    def _on_Sample(self, e: ev.Sample) -> None:
        self._samples.append(e)
        self._logline(e.time, "info", f"sample at step {e.step}: {self._short(e.path)}")

    def _on_Warning(self, e: ev.Warning_) -> None:
        self._warnings.append(e.message)
        self._logline(e.time, "warning", e.message)

    def _on_Log(self, e: ev.Log) -> None:
        self._logline(e.time, e.level, e.message)

    def _on_Finished(self, e: ev.Finished) -> None:
        status = "stopped" if e.stopped else "finished"
        self._fields["final"] = FinalState(status, e.step, e.lora_path, e.seconds)
        self._fields["phase"] = PhaseView(ev.FINISHED)
        self._logline(e.time, "info", f"{status} at step {e.step}" + (f": {e.lora_path}" if e.lora_path else ""))

    def _on_Failed(self, e: ev.Failed) -> None:
        self._fields["final"] = FinalState("failed", e.step, "", 0.0, e.message, e.hint, e.kind, e.last_good)
        self._fields["phase"] = PhaseView(ev.FAILED)
        self._logline(e.time, "error", f"failed at step {e.step}: {e.message}")

    def _short(self, path: str) -> str:
        return display_path(path, self._fields.get("output_dir", ""))

    def _logline(self, time: float, level: str, message: str) -> None:
        self._log.append(LogLine(time, level, message))
        self._log_total += 1

    def view(self, now: Optional[float] = None) -> RunView:
        """The frozen RunView at `now` (Unix seconds; default: the last event's time, for replays and tests)."""
        f = self._fields
        now = f.get("last_event_at", 0.0) if now is None else now
        steps, (raw, smooth) = self._loss.snapshot()
        validation_steps, (validation,) = self._validation.snapshot()
        return RunView(
            **{k: v for k, v in f.items()},
            loss_steps=steps, loss_raw=raw, loss_smooth=smooth,
            validation_steps=validation_steps, validation_losses=validation,
            eta_seconds=self._eta(now),
            memory_history=tuple(self._memory),
            checkpoints=tuple(self._checkpoints), samples=tuple(self._samples),
            warnings=tuple(self._warnings), log=tuple(self._log), log_total=self._log_total,
            now=now, events_seen=self.events_seen,
        )

    def _eta(self, now: float) -> Optional[float]:
        """The engine's ETA at its last step, counted down since (never below zero)."""
        step = self._last_step
        if step is None or self._fields.get("final") is not None:
            return None
        since = max(0.0, now - step.time) if step.time else 0.0
        return max(0.0, step.eta_seconds - since)


def fold(events: Iterable[ev.Event], now: Optional[float] = None, **kwargs) -> RunView:
    """The view after all of `events` (a finished run's report, or a test's expectation)."""
    return RunModel(**kwargs).apply_all(events).view(now)


# --- formatting shared by every view -------------------------------------------------------

def final_lines(view: RunView) -> list[tuple[str, str]]:
    """How the run ended, what it wrote and where; for a failure, why and what to do.

    (text, style) pairs: the dashboard banner, the console view and plain output share them.
    """
    final = view.final
    if final is None:
        return []
    where = view.output_dir
    if final.status == "failed":
        lines = [(f"✖ Failed at step {final.step}: {final.message}", "bold red")]
        if final.hint:
            lines.append((f"What to do: {final.hint}", ""))
        lines.append((f"Last good LoRA: {final.last_good}", "cyan") if final.last_good
                     else ("No LoRA was saved before the failure.", ""))
        record = Path(where) / "events.jsonl" if where else "events.jsonl in the output dir"
        lines.append((f"Full record: {record}", "grey70"))
        return lines
    headline = (f"■ Stopped on request at step {final.step}" if final.status == "stopped"
                else f"✔ Finished: {final.step} steps")
    lines = [(f"{headline} in {format_duration(view.elapsed)}", "bold green")]
    if final.lora_path:
        lines.append((f"LoRA: {final.lora_path}", "cyan"))
    saves = sum(1 for saved in view.checkpoints if saved.kind == "lora")
    states = len(view.checkpoints) - saves
    counts = ((saves, "LoRA save"), (states, "state"), (len(view.samples), "sample"))
    written = ", ".join(plural(n, word) for n, word in counts if n or word != "state")
    lines.append((f"Written to {where or 'the output dir'}: {written}, config.toml, events.jsonl", "grey70"))
    return lines
