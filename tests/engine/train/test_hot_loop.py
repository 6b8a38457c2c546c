"""The training hot loop: no host<->device sync per step (only at the logging interval), the
attention that runs is PyTorch SDPA, and the dtypes are where issue 8 puts them (frozen base in
the compute dtype, LoRA parameters and optimizer state in fp32).

Syncs are counted by wrapping the Tensor methods that force one on a GPU (`.item()`,
`.cpu()`, `bool(t)`, `float(t)`, `.tolist()`, `.nonzero()`, ...) and recording the calls
made from engine code while optimizer steps are being taken. On this CPU-only machine none of
them would stall anything, but the same call in the same place would stall a GPU every step.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.train import loop

ENGINE_DIR = str(Path(loop.__file__).resolve().parents[1])  # the whole engine package
SYNCING_METHODS = ("item", "tolist", "cpu", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")


class SyncCounter:
    """Engine-made calls of syncing Tensor methods, by file:line, split into calls made while
    the loop is between its first batch and its last optimizer step ("in_steps") and the rest."""

    def __init__(self) -> None:
        self.in_steps: Counter = Counter()
        self.outside: Counter = Counter()
        self.stepping = False

    def record(self) -> None:
        frame = sys._getframe(2)
        filename = frame.f_code.co_filename
        if filename.startswith(ENGINE_DIR):
            where = f"{Path(filename).name}:{frame.f_lineno} ({frame.f_code.co_name})"
            (self.in_steps if self.stepping else self.outside)[where] += 1


@pytest.fixture
def sync_counter(monkeypatch):
    counter = SyncCounter()
    for name in SYNCING_METHODS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, **kwargs):
            counter.record()
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)

    total_steps = {}
    original_batch_loss, original_step = loop.Trainer.batch_loss, loop.Trainer.optimizer_step

    def batch_loss(self, batch):
        total_steps["n"] = self.total_steps
        counter.stepping = True
        return original_batch_loss(self, batch)

    def optimizer_step(self):
        original_step(self)
        if self.position.global_step + 1 >= self.total_steps:  # this was the last step
            counter.stepping = False

    monkeypatch.setattr(loop.Trainer, "batch_loss", batch_loss)
    monkeypatch.setattr(loop.Trainer, "optimizer_step", optimizer_step)
    return counter


def _run(tmp_path, tiny_model, demo_dataset, steps=4, freeze_old_objects=True, **options):
    recorded = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=steps, **options),
                     freeze_old_objects=freeze_old_objects)
    assert recorded.result.ok, recorded.result.error
    return recorded


@pytest.mark.e2e
def test_no_engine_sync_between_logging_intervals(tmp_path, tiny_model, demo_dataset, sync_counter, monkeypatch):
    """Four steps, logging only at the end: the loop never reads a device value while stepping.
    And the objects alive at the start are out of the GC's reach while steps run (issue 17),
    given back to it afterwards."""
    import gc

    frozen = []
    counted_step = loop.Trainer.optimizer_step

    def optimizer_step(self):
        frozen.append(gc.get_freeze_count())
        counted_step(self)

    monkeypatch.setattr(loop.Trainer, "optimizer_step", optimizer_step)
    # (the helper's own freeze off: the freeze counted here must be the loop's)
    _run(tmp_path, tiny_model, demo_dataset, log_every_n_steps=1000, freeze_old_objects=False)
    assert len(frozen) == 4 and min(frozen) > 10_000, frozen
    assert gc.get_freeze_count() == 0
    assert not sync_counter.in_steps, f"host<->device syncs inside the step loop: {dict(sync_counter.in_steps)}"
    # the one read of the interval happens, after the last step
    assert any("loop.py" in where and "log" in where for where in sync_counter.outside)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_counter_sees_syncs_when_the_loop_logs_every_step(tmp_path, tiny_model, demo_dataset, sync_counter):
    """The control: logging every step reads the loss every step, and the counter says so (so
    a `.item()` added to the step would fail the test above)."""
    _run(tmp_path, tiny_model, demo_dataset, log_every_n_steps=1)
    in_loop = {where: n for where, n in sync_counter.in_steps.items() if "loop.py" in where}
    assert in_loop and max(in_loop.values()) >= 3, dict(sync_counter.in_steps)


@pytest.mark.e2e
@pytest.mark.slow
def test_sdpa_attention_and_dtypes_in_a_bf16_run(tmp_path, tiny_model, demo_dataset, monkeypatch):
    from diffusers.models.attention_processor import AttnProcessor2_0

    seen = {}
    original = loop.Trainer.optimizer_step

    def optimizer_step(self):
        seen.setdefault("trainer", self)
        original(self)
        seen["state"] = self.optimizer.state_dict()["state"]

    monkeypatch.setattr(loop.Trainer, "optimizer_step", optimizer_step)
    _run(tmp_path, tiny_model, demo_dataset, steps=2, mixed_precision="bf16", max_grad_norm=1.0)
    trainer = seen["trainer"]
    unet = trainer.model.unet
    processors = {type(p).__name__ for p in unet.attn_processors.values()}
    assert processors == {AttnProcessor2_0.__name__}  # torch's scaled_dot_product_attention
    assert {p.dtype for p in unet.parameters()} == {torch.bfloat16}  # frozen base in the compute dtype
    assert not any(p.requires_grad for p in unet.parameters())
    lora = [p for p in trainer.network.parameters()]
    assert lora and {p.dtype for p in lora} == {torch.float32} and all(p.requires_grad for p in lora)
    moments = [t for state in seen["state"].values() for t in state.values()
               if isinstance(t, torch.Tensor) and t.dim() > 0]
    assert moments and {t.dtype for t in moments} == {torch.float32}
