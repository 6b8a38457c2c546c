"""Shared helpers for the training tests: a small config on the tiny model and a run that
records every event. Steps run single-threaded: on a small shared CPU, torch's thread pool
makes a tiny model's step 20x slower, not faster.

`train` spends on the run, not on the test process around it: each model part is read from its
folder once per process (later runs get a deep copy of what `from_pretrained` gave), and the
objects alive before the run are kept out of the cyclic GC's passes while it runs."""
from __future__ import annotations

import contextlib
import copy
import gc
from collections import OrderedDict
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


# (class, folder, options, the folder's files) -> the module from_pretrained gave; a few tiny models' worth
_LOADED: OrderedDict = OrderedDict()
_LOADED_MAX = 6


def _files_of(folder: Path) -> tuple:
    return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))


@contextlib.contextmanager
def parts_loaded_once():
    """While open, engine.model.load reads each model part (UNet, VAE, text encoder) of a local
    diffusers folder once per process: a part asked for again, with the same options and files
    unchanged, is a deep copy of the module `from_pretrained` gave the first time (a tiny UNet
    loads in ~1.6 s, copies in ~0.3 s). Failures are not kept: a retried load fails again."""
    import torch

    import engine.model.load as load

    original = load._load_from_pretrained

    def reusing(cls, location, subfolder, source, **kwargs):
        folder = Path(location) / (subfolder or "")
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and folder.is_dir()):
            return original(cls, location, subfolder, source, **kwargs)
        key = (cls, str(folder.resolve()), tuple(sorted((k, repr(v)) for k, v in kwargs.items())), _files_of(folder))
        if key not in _LOADED:
            _LOADED[key] = original(cls, location, subfolder, source, **kwargs)
            while len(_LOADED) > _LOADED_MAX:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        return copy.deepcopy(_LOADED[key])

    load._load_from_pretrained = reusing
    try:
        yield
    finally:
        load._load_from_pretrained = original


def train(cfg, control=None, on_event=None, *, freeze_old_objects: bool = True, **kwargs) -> Recorded:
    """engine.train.run.run(cfg, ...) with every event recorded, model parts loaded once per process
    (`parts_loaded_once`). `freeze_old_objects`: the objects alive before the run (the test session's
    modules, ~500k) are frozen out of the cyclic GC while it runs, so the engine's gc.collect() walks
    only the run's own objects (a full pass costs ~1.5 s here); False for a test of the loop's own freeze."""
    from engine.train.run import run

    recorded = Recorded(result=None)

    def emit(event):
        recorded.events.append(event)
        if on_event is not None:
            on_event(event)

    if freeze_old_objects:
        gc.freeze()
    try:
        with parts_loaded_once():
            recorded.result = run(cfg, emit, control, **kwargs)
    finally:
        if freeze_old_objects:
            gc.unfreeze()  # (the loop unfreezes all when it ends: this covers a run that ends before it)
    return recorded


def scan_for(cfg, base_dir=None):
    """The dataset `cfg` names, parsed and scanned as engine.train.run does before the model loads."""
    from engine.data.dataset_config import load_run_dataset_config
    from engine.data.scan import scan_dataset

    return scan_dataset(load_run_dataset_config(cfg, base_dir), skip_bad_images=cfg.dataset.skip_bad_images)
