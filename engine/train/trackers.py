"""`log_with`: metrics and sample images sent to accelerate's trackers (TensorBoard, wandb), as
sd-scripts does (library/train_util.py `init_trackers`, train_network.py).

As in sd-scripts:
  - `log_with = "all"` means TensorBoard and wandb;
  - the project name is `log_tracker_name`, else "network_train";
  - TensorBoard writes to `logging_dir/<log_prefix><YYYYmmddHHMMSS>/<project>` (logging_dir
    defaults to output_dir/logs here);
  - `wandb_run_name` names the wandb run; `log_tracker_config` (a TOML file of
    `[tracker] key = value` init arguments) replaces the default init arguments;
  - `log_config` sends the run config to the trackers.
wandb's files go to the run's logging folder (sd-scripts leaves them in ./wandb) unless the
tracker config says otherwise. wandb's API key is read by wandb from WANDB_API_KEY: a key in a
config file would be copied into config.toml and the LoRA's metadata.
Scalars use the names of the events.jsonl sink: loss/current, loss/average, lr/<group>, speed/*; the
validation loss goes as sd-scripts names it, loss/validation/step_average or loss/validation/epoch_average.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Optional

from engine.errors import ConfigError
from engine.events.types import Failed, Finished, Sample, Step, Validation

DEFAULT_PROJECT = "network_train"
# tracker -> (module it imports, the pip extra that installs it)
TRACKER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}


def tracker_names(log_with: str) -> list[str]:
    """accelerate tracker names for `log_with`: [] for "", both for "all" (as sd-scripts), else itself."""
    if not log_with:
        return []
    return list(TRACKER_PACKAGES) if log_with == "all" else [log_with]


def check_trackers(logging_cfg: Any) -> None:
    """ConfigError before anything loads: a tracker whose package is missing (naming the pip
    extra), or an unreadable log_tracker_config."""
    for name in tracker_names(logging_cfg.log_with):
        module, extra = TRACKER_PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f'log_with = "{logging_cfg.log_with}" needs the {module} package, which is not installed',
                              key="log_with", hint=f'pip install "sdxl-tui[{extra}]", or set log_with = ""')
    if logging_cfg.log_tracker_config:
        tracker_init_kwargs(logging_cfg)


def tracker_init_kwargs(logging_cfg: Any) -> dict[str, dict]:
    """Per-tracker init arguments: the log_tracker_config file's tables, else the run name."""
    if logging_cfg.log_tracker_config:
        import tomllib

        path = Path(logging_cfg.log_tracker_config)
        try:
            return tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"log_tracker_config: cannot read {path}: {exc}", key="log_tracker_config",
                              path=str(path), hint="give a TOML file with [wandb] / [tensorboard] tables") from None
    if logging_cfg.wandb_run_name:
        return {"wandb": {"name": logging_cfg.wandb_run_name}}
    return {}


def tracker_run_dir(logging_cfg: Any, output_dir: Path, stamp: str) -> Path:
    """The trackers' run folder: `logging_dir` (default output_dir/logs) / `<log_prefix><stamp>`."""
    base = Path(logging_cfg.logging_dir) if logging_cfg.logging_dir else Path(output_dir) / "logs"
    return base / f"{logging_cfg.log_prefix}{stamp}"


class Trackers:
    """An event sink: Step -> scalars, Sample -> an image; closes on Finished / Failed."""

    def __init__(self, trackers: list) -> None:
        self.trackers = trackers
        self.prompt_ids: dict[str, int] = {}  # prompt -> its number (first seen first), for stable image keys

    def __call__(self, event: Any) -> None:
        if not self.trackers:
            return
        if isinstance(event, Step):
            self.log(step_scalars(event), event.step)
        elif isinstance(event, Validation):  # sd-scripts' keys (train_network.py)
            self.log({f"loss/validation/{event.kind}_average": event.loss}, event.step)
        elif isinstance(event, Sample):
            self.log_image(event)
        elif isinstance(event, (Finished, Failed)):
            self.close()

    def log(self, values: dict, step: int) -> None:
        """Send scalar `values` (name -> number) to every tracker at optimizer step `step`."""
        for tracker in self.trackers:
            tracker.log(values, step=step)

    def log_image(self, sample: Sample) -> None:
        """Send a sample image to every tracker under samples/prompt_NN (NN: the prompt's first-seen
        order), as a (1, H, W, 3) uint8 array for TensorBoard, a PIL image otherwise.
        """
        import numpy as np
        from PIL import Image

        with Image.open(sample.path) as opened:
            image = opened.convert("RGB")
        key = f"samples/prompt_{self.prompt_ids.setdefault(sample.prompt, len(self.prompt_ids)):02d}"
        for tracker in self.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({key: np.asarray(image)[None]}, step=sample.step, dataformats="NHWC")
            else:
                tracker.log_images({key: [image]}, step=sample.step)

    def close(self) -> None:
        """Finish every tracker once (later events are dropped)."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            tracker.finish()


def step_scalars(step: Step) -> dict[str, float]:
    """A Step event as tracker scalars: loss/current, loss/average, speed/seconds_per_step,
    speed/images_per_second, lr/<group>, and memory/peak_bytes where CUDA reports it.
    """
    values = {"loss/current": step.loss, "loss/average": step.smoothed_loss,
              "speed/seconds_per_step": step.seconds_per_step, "speed/images_per_second": step.images_per_second}
    values.update({f"lr/{group}": lr for group, lr in step.lr.items()})
    if step.memory.peak is not None:
        values["memory/peak_bytes"] = float(step.memory.peak)
    return values


def start_trackers(cfg: Any, output_dir: Path, stamp: Optional[str] = None) -> Optional[Trackers]:
    """accelerate's trackers for `cfg.logging.log_with`, started (None when it is empty)."""
    names = tracker_names(cfg.logging.log_with)
    if not names:
        return None
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    logging_cfg = cfg.logging
    run_dir = tracker_run_dir(logging_cfg, output_dir, stamp or time.strftime("%Y%m%d%H%M%S"))
    run_dir.mkdir(parents=True, exist_ok=True)
    project = logging_cfg.log_tracker_name or DEFAULT_PROJECT
    init_kwargs = tracker_init_kwargs(logging_cfg)
    if not logging_cfg.log_tracker_config:
        init_kwargs.setdefault("wandb", {}).setdefault("dir", str(run_dir))
    started = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        kwargs = init_kwargs.get(name, {})
        tracker = cls(project, str(run_dir), **kwargs) if cls.requires_logging_directory else cls(project, **kwargs)
        tracker.start()
        started.append(tracker)
    if logging_cfg.log_config:
        config = flat_config(cfg)
        for tracker in started:
            tracker.store_init_configuration(config)
    return Trackers(started)


def flat_config(cfg: Any) -> dict[str, Any]:
    """The run config as flat name -> value, lists as text (what trackers accept)."""
    out: dict[str, Any] = {}
    for section, values in cfg.model_dump().items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            out[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
