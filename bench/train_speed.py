"""Training speed and memory for a few settings, through engine.train.run (figures only, no asserts).

    .venv/bin/python bench/train_speed.py                 # tiny model, CPU or GPU
    .venv/bin/python bench/train_speed.py --steps 40 --model /path/to/sdxl --dataset ds.toml

Each setting runs in its own process so peak memory is its own: CUDA peak allocated where
CUDA runs, else the process's peak RSS. s/step and images/s are steady state: the mean of the
Step events after the first logging interval (which includes warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SETTINGS: dict[str, dict] = {
    "fp32 AdamW": dict(mixed_precision="no"),
    "bf16 AdamW": dict(mixed_precision="bf16"),
    "bf16 + checkpointing": dict(mixed_precision="bf16", gradient_checkpointing=True),
    "bf16 + fused backward": dict(mixed_precision="bf16", fused_backward_pass=True),
    "bf16 AdamW8bit": dict(mixed_precision="bf16", optimizer_type="AdamW8bit"),
    "bf16 unet-only, cached text": dict(mixed_precision="bf16", network_train_unet_only=True,
                                        cache_text_encoder_outputs=True),
}


def one(setting: str, model: str, dataset: str, steps: int, dim: int) -> dict:
    import resource

    import torch

    from engine.config.schema import RunConfig
    from engine.events.types import Step
    from engine.train.run import run

    steps_seen: list[Step] = []
    with tempfile.TemporaryDirectory() as out:
        options = dict(
            pretrained_model_name_or_path=model, dataset_config=dataset, output_dir=out, max_train_steps=steps,
            optimizer_type="AdamW", learning_rate=1e-4, network_dim=dim, network_alpha=float(dim),
            gradient_checkpointing=False, log_every_n_steps=max(1, steps // 8), save_precision="fp16")
        cfg = RunConfig().with_values(**{**options, **SETTINGS[setting]})
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        result = run(cfg, lambda e: steps_seen.append(e) if isinstance(e, Step) else None)
    if not result.ok:
        return {"setting": setting, "error": str(result.error)}
    steady = steps_seen[1:] or steps_seen
    seconds = sum(s.seconds_per_step for s in steady) / len(steady)
    images = sum(s.images_per_second for s in steady) / len(steady)
    if torch.cuda.is_available():
        peak, kind = torch.cuda.max_memory_allocated(), "CUDA peak allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"
    return {"setting": setting, "s_per_step": seconds, "images_per_s": images, "peak_bytes": peak,
            "memory_kind": kind, "device": "cuda" if torch.cuda.is_available() else "cpu"}


def tiny_inputs(folder: Path) -> tuple[str, str]:
    from engine.demo.dataset import make_demo_dataset
    from engine.demo.tiny_model import build_tiny_model

    if not (folder / "tiny-sdxl" / "model_index.json").is_file():
        build_tiny_model(folder)
    if not (folder / "dataset" / "dataset.toml").is_file():
        make_demo_dataset(folder / "dataset", resolution=64)
    return str(folder / "tiny-sdxl"), str(folder / "dataset" / "dataset.toml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="SDXL model (default: the tiny model, built in --work)")
    parser.add_argument("--dataset", help="dataset TOML (default: the demo dataset, 64 px)")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench"), help="folder for the tiny model and data")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--only", action="append", help="run only these settings (names as printed)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.model, args.dataset, args.steps, args.dim)))
        return 0
    model, dataset = args.model, args.dataset
    if not model or not dataset:
        tiny_model, tiny_dataset = tiny_inputs(Path(args.work))
        model, dataset = model or tiny_model, dataset or tiny_dataset
    print(f"model {model}\ndataset {dataset}\n{args.steps} steps, LoRA rank {args.dim}\n")
    print(f"{'setting':32} {'s/step':>8} {'images/s':>9} {'peak memory':>12}")
    for setting in args.only or SETTINGS:
        command = [sys.executable, __file__, "--one", setting, "--model", model, "--dataset", dataset,
                   "--steps", str(args.steps), "--dim", str(args.dim)]
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode or not lines:
            print(f"{setting:32} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
            continue
        row = json.loads(lines[-1])
        if "error" in row:
            print(f"{setting:32} failed: {row['error']}")
            continue
        print(f"{setting:32} {row['s_per_step']:8.3f} {row['images_per_s']:9.2f} "
              f"{row['peak_bytes'] / 2**20:9.0f} MiB  ({row['memory_kind']}, {row['device']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
