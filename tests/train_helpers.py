"""Shared helpers for the training tests: a small config on the tiny model and a run that
records every event. Steps run single-threaded: on a small shared CPU, torch's thread pool
makes a tiny model's step 20x slower, not faster."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_config(tmp_path: Path, tiny_model, demo_dataset, **options: Any):
    """A fast CPU run on the tiny model (fp32, unet + both text encoders, AdamW)."""
    from engine.config.schema import RunConfig

    base = dict(
        pretrained_model_name_or_path=str(tiny_model.diffusers_dir),
        dataset_config=str(demo_dataset.dataset_toml),
        output_dir=str(tmp_path / "out"), output_name="lora",
        max_train_steps=4, mixed_precision="no", gradient_checkpointing=False,
        optimizer_type="AdamW", learning_rate=1e-3, network_dim=4, network_alpha=4.0,
        save_precision="fp32", log_every_n_steps=1, seed=7,
    )
    base.update(options)
    return RunConfig().with_values(**base)


@dataclass
class Recorded:
    result: Any
    events: list = field(default_factory=list)

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def losses(self) -> list[float]:
        from engine.events.types import Step

        return [e.loss for e in self.of(Step)]

    def lora(self, name: Optional[str] = None) -> dict:
        from safetensors.torch import load_file

        path = Path(self.result.output_dir) / (name or Path(self.result.lora_path).name)
        return load_file(str(path))


def train(cfg, control=None, on_event=None, **kwargs) -> Recorded:
    from engine.train.run import run

    recorded = Recorded(result=None)

    def emit(event):
        recorded.events.append(event)
        if on_event is not None:
            on_event(event)

    recorded.result = run(cfg, emit, control, **kwargs)
    return recorded


def scan_for(cfg, base_dir=None):
    """The dataset `cfg` names, parsed and scanned as engine.train.run does before the model loads."""
    from engine.data.dataset_config import load_run_dataset_config
    from engine.data.scan import scan_dataset

    return scan_dataset(load_run_dataset_config(cfg, base_dir), skip_bad_images=cfg.dataset.skip_bad_images)
