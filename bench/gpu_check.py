"""The GPU check for issue 8, in one run of under 8 minutes (prepared on a CPU-only machine).

What it measures, on the full-size SDXL UNet architecture (random weights from SDXL base's
published config, nothing downloaded) at 1024², bf16, cached latents and text-encoder outputs:
  1. gradient checkpointing, LoRA rank 16, batch 1  -> s/step, images/s, peak VRAM
     (the memory floor: should stay under 10 GB), MFU
  2. the same at batch 4
  3. 1. with fused backward (its memory effect), then 2. with fused backward
  4. 1. without gradient checkpointing, at rank 32, and 2. with channels-last
  5. the engine end to end on CUDA (tiny model, `engine.train.run`): it trains, memory is reported
     from CUDA, the text encoders / VAE leave the GPU after caching, and CUDA's sync debug
     mode finds no host<->device sync while batches are built and steps are taken
  6. if time is left: 1. with torch.compile
Figures go to a JSON file (default: bench/results/gpu_check.json) and a table on stdout.

How to run it (a session with a GPU, from the repository root):
    .venv/bin/python bench/gpu_check.py --json "$OUT/gpu_check.json"
or through the device tool: command `python bench/gpu_check.py --json $OUT/gpu_check.json`,
timeout_s 540 (the script stops starting new cases after --budget seconds, default 420).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_step import Case, run_in_child, table  # noqa: E402

MEMORY_FLOOR_BYTES = 10 * 10**9  # sd-scripts' "10 GB recommended"
SMOKE_STEPS = 30


def cases() -> list[Case]:
    base = Case(model="sdxl", precision="bf16", resolution=1024, rank=16, batch=1, checkpointing=True,
                steps=6, warmup=3, device="cuda")
    return [base, dataclasses.replace(base, batch=4), dataclasses.replace(base, fused=True),
            dataclasses.replace(base, batch=4, fused=True), dataclasses.replace(base, checkpointing=False),
            dataclasses.replace(base, rank=32), dataclasses.replace(base, batch=4, channels_last=True)]


class _sync_warnings:
    """CUDA's sync debug mode ("warn") around one call, its warnings recorded in `into`."""

    def __init__(self, into: list, name: str) -> None:
        self.into, self.name = into, name

    def __enter__(self):
        import warnings

        import torch

        self.catcher = warnings.catch_warnings(record=True)
        self.caught = self.catcher.__enter__()
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(1)

    def __exit__(self, *exc):
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode(0)
        self.catcher.__exit__(*exc)
        for w in self.caught:
            if "synchroniz" in str(w.message):
                self.into.append(f"{self.name}: {Path(w.filename).name}:{w.lineno}")
        return False


def dry_run_cases() -> list[Case]:
    return [dataclasses.replace(c, model="tiny", resolution=128, device="cpu", steps=2, warmup=1, threads=1)
            for c in cases()[:3]]


def engine_smoke(work: Path, steps: int = SMOKE_STEPS) -> dict:
    """The real `engine.train.run` on CUDA with the tiny model: does the whole path work on a GPU?"""
    import torch

    from engine.config.schema import RunConfig
    from engine.demo.dataset import make_demo_dataset
    from engine.demo.tiny_model import build_tiny_model
    from engine.events.types import Step
    from engine.train.run import run

    model = build_tiny_model(work / "model", seed=0)
    dataset = make_demo_dataset(work / "data", resolution=64)
    cfg = RunConfig().with_values(
        pretrained_model_name_or_path=str(model.diffusers_dir), dataset_config=str(dataset.dataset_toml),
        output_dir=str(work / "out"), max_train_steps=steps, log_every_n_steps=10, mixed_precision="bf16",
        optimizer_type="AdamW8bit", network_dim=8, network_alpha=8.0, network_train_unet_only=True,
        cache_text_encoder_outputs=True, max_data_loader_n_workers=2)
    events: list = []
    placements: dict = {}
    syncs: list = []
    from engine.data import training_data
    from engine.train import loop

    def watched(cls, name, first_call=None):
        original = getattr(cls, name)

        def call(self, *args, **kwargs):
            if first_call is not None:
                first_call(self)
            with _sync_warnings(syncs, name):
                return original(self, *args, **kwargs)

        return original, call

    def where_parts_are(trainer):
        if not placements:
            placements.update({name: str(next(getattr(trainer.model, name).parameters()).device)
                               for name in ("unet", "vae", "text_encoder1", "text_encoder2")})

    patches = [(loop.Trainer, "batch_loss", where_parts_are), (loop.Trainer, "optimizer_step", None),
               (training_data.TrainingData, "_batch", None)]
    originals = []
    for cls, name, first in patches:
        original, call = watched(cls, name, first)
        originals.append((cls, name, original))
        setattr(cls, name, call)
    try:
        result = run(cfg, events.append)
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)
    steps = [e for e in events if isinstance(e, Step)]
    return {"ok": result.ok, "error": repr(result.error) if result.error else "", "steps": result.step,
            "placements": placements, "last_s_per_step": steps[-1].seconds_per_step if steps else None,
            "memory": dataclasses.asdict(steps[-1].memory) if steps else None,
            "losses": [s.loss for s in steps],
            # host<->device syncs CUDA reported inside batch building, forward and optimizer step
            # (logging happens outside these): the hot loop should have none
            "syncs_in_step": len(syncs), "sync_sites": sorted(set(syncs))[:20],
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(HERE / "results" / "gpu_check.json"))
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which no new case starts")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="check this script's plumbing on a CPU: tiny model, few steps (figures meaningless)")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing measured", file=sys.stderr)
        return 2
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    begun = time.monotonic()
    results: list[dict] = []
    out: dict = {"results": results}
    from bench_env import environment

    out["environment"] = environment()

    def left() -> float:
        return args.budget - (time.monotonic() - begun)

    def save() -> None:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))

    planned = dry_run_cases() if args.cpu_dry_run else cases()
    smoke_steps = 4 if args.cpu_dry_run else SMOKE_STEPS
    for index, case in enumerate(planned):
        if left() < 30:
            results.append({"label": case.label, "skipped": "time budget spent"})
            continue
        result = run_in_child(case, timeout=max(30.0, min(150.0, left())))
        results.append(result)
        shown = result.get("skipped") or f"{result['s_per_step']:.3f} s/step"
        print(f"{case.label}: {shown}", file=sys.stderr, flush=True)
        save()
        if index == 1:  # the engine end to end, once the headline figures are safe
            with tempfile.TemporaryDirectory() as work:
                try:
                    out["engine_smoke"] = engine_smoke(Path(work), smoke_steps)
                except Exception as exc:  # a finding to report, not a reason to lose the figures
                    out["engine_smoke"] = {"ok": False, "error": repr(exc)}
            save()
    if left() > 150 and not args.cpu_dry_run:
        results.append(run_in_child(dataclasses.replace(planned[0], compile=True, warmup=4), timeout=left() - 10))
    first = results[0]
    if "cuda_peak_allocated_bytes" in first:
        out["memory_floor"] = {"peak_allocated_bytes": first["cuda_peak_allocated_bytes"],
                               "peak_reserved_bytes": first["cuda_peak_reserved_bytes"],
                               "under_10_GB": first["cuda_peak_reserved_bytes"] < MEMORY_FLOOR_BYTES}
    out["seconds"] = time.monotonic() - begun
    save()
    print(table([r for r in results if "label" in r]))
    print(json.dumps({k: v for k, v in out.items() if k not in ("results", "environment")}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
