"""Start-up: from `sdxl-tui train run.toml` to the first optimizer step, by phase, and what
caches on disk save on the second run; plus the CLI's own start (`--help`, `import sdxl_tui`)
and the import cost of the heavy libraries.

Phases come from the engine's events (events.jsonl, wall-clock `time` of each event) against
the moment the command was started:
  start -> loading_model      interpreter, imports, config check, output folder
  loading_model -> scanning   model load (+ LoRA injection)
  scanning -> caching         dataset scan
  caching                     latents + text-encoder outputs (VAE / text encoders run, or disk read)
  RunStarted -> first Step    optimizer, schedule and the first step itself

Runs on the built-in tiny model and demo dataset (the real SDXL checkpoint cannot be
downloaded here); model-load figures for the 6.9 GB model therefore need a machine that
has it: pass --model PATH to use it.

    .venv/bin/python bench/startup.py --json bench/results/startup.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parent.parent
PHASES = ("imports", "model_load", "scan", "caching", "first_step", "total")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1")


def _python() -> str:
    return sys.executable


def time_command(args: list[str], repeats: int) -> dict:
    """Median wall seconds of a short command (each a fresh interpreter)."""
    times = []
    for _ in range(repeats):
        begun = time.perf_counter()
        subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, check=True)
        times.append(time.perf_counter() - begun)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs": len(times)}


def import_costs(repeats: int) -> dict:
    py = _python()
    checks = {
        "python -c pass": [py, "-c", "pass"],
        "sdxl-tui --help": [py, "-m", "sdxl_tui", "--help"],
        "import sdxl_tui": [py, "-c", "import sdxl_tui"],
        # --help builds the parser without any command's arguments; this is every command module loaded
        "import sdxl_tui.cli + build_parser() (all commands)": [py, "-c", "from sdxl_tui.cli import build_parser; "
                                                                          "build_parser()"],
        "import textual.app": [py, "-c", "import textual.app"],
        "import torch": [py, "-c", "import torch"],
        "import accelerate": [py, "-c", "import accelerate"],
        "import diffusers UNet2DConditionModel": [py, "-c", "from diffusers import UNet2DConditionModel"],
        "import diffusers StableDiffusionXLPipeline": [py, "-c", "from diffusers import StableDiffusionXLPipeline"],
        "import engine.train.run": [py, "-c", "import engine.train.run"],
    }
    out = {name: time_command(args, repeats) for name, args in checks.items()}
    leaked = subprocess.run([py, "-c", "import sys, sdxl_tui, sdxl_tui.cli; sdxl_tui.cli.build_parser(); "
                                       "print(sorted(m for m in ('torch', 'diffusers', 'transformers') "
                                       "if m in sys.modules))"],
                            cwd=REPO, env=_env(), capture_output=True, text=True, check=True).stdout.strip()
    out["heavy modules imported by the CLI's start"] = leaked
    return out


def prepare(work: Path, model: Optional[str]) -> tuple[Path, Path]:
    """The tiny model (unless `model` is given) and a private copy of the demo dataset."""
    from engine.demo.dataset import make_demo_dataset

    if model is None:
        from engine.demo.tiny_model import build_tiny_model

        model = str(build_tiny_model(work / "model", seed=0).diffusers_dir)
    dataset = make_demo_dataset(work / "data", resolution=64)
    return Path(model), Path(dataset.dataset_toml)


def write_config(path: Path, model: Path, dataset_toml: Path, output_dir: Path) -> None:
    from engine.config.schema import RunConfig
    from engine.config.toml_file import save_config

    cfg = RunConfig().with_values(
        pretrained_model_name_or_path=str(model), dataset_config=str(dataset_toml), output_dir=str(output_dir),
        max_train_steps=2, log_every_n_steps=1, mixed_precision="no", gradient_checkpointing=False,
        optimizer_type="AdamW", network_dim=4, network_alpha=4.0, network_train_unet_only=True,
        cache_latents=True, cache_latents_to_disk=True, cache_text_encoder_outputs=True,
        cache_text_encoder_outputs_to_disk=True)
    save_config(cfg, path)


def phases_of(events_file: Path, started: float) -> dict:
    from engine.events.types import Phase, Step, event_from_json

    events = [event_from_json(line) for line in events_file.read_text().splitlines()]
    first = {}
    for event in events:
        key = event.name if isinstance(event, Phase) else type(event).__name__
        first.setdefault(key, event.time)
    loading, scanning = first["loading_model"], first["scanning_dataset"]
    caching_start = min(first.get("caching_latents", first["RunStarted"]),
                        first.get("caching_text_encoder_outputs", first["RunStarted"]))
    step = next(e.time for e in events if isinstance(e, Step))
    return {"imports": loading - started, "model_load": scanning - loading, "scan": caching_start - scanning,
            "caching": first["RunStarted"] - caching_start, "first_step": step - first["RunStarted"],
            "total": step - started}


def train_once(config: Path) -> dict:
    started = time.time()
    done = subprocess.run([_python(), "-m", "sdxl_tui", "train", str(config), "--plain"], cwd=REPO, env=_env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"sdxl-tui train failed ({done.returncode}): {done.stderr[-2000:]}")
    from engine.config.toml_file import load_config

    return phases_of(Path(load_config(config).saving.output_dir) / "events.jsonl", started)


def remove_disk_caches(image_dir: Path) -> int:
    removed = 0
    for path in image_dir.iterdir():
        if path.name.endswith(".sdxl-tui.safetensors"):
            path.unlink()
            removed += 1
    return removed


def cold_and_warm(work: Path, model: Path, dataset_toml: Path, repeats: int) -> dict:
    image_dir = dataset_toml.parent / "images"
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    for attempt in range(repeats):
        remove_disk_caches(image_dir)
        for kind in ("cold", "warm"):
            config = work / f"{kind}{attempt}.toml"
            write_config(config, model, dataset_toml, work / f"out_{kind}{attempt}")
            runs[kind].append(train_once(config))
    medians = {kind: {phase: statistics.median(r[phase] for r in rs) for phase in PHASES} for kind, rs in runs.items()}
    return {"runs": runs, "median": medians,
            "warm_saves_s": medians["cold"]["total"] - medians["warm"]["total"],
            "caching_speedup": medians["cold"]["caching"] / max(medians["warm"]["caching"], 1e-9)}


def table(result: dict) -> str:
    lines = ["phase        | cold (s) | disk caches (s)", "-------------+----------+----------------"]
    for phase in PHASES:
        lines.append(f"{phase:<12} | {result['median']['cold'][phase]:8.2f} | {result['median']['warm'][phase]:8.2f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="SDXL model to load (default: the tiny model, built here)")
    parser.add_argument("--repeats", type=int, default=3, help="cold/warm pairs (median reported)")
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)
    imports = import_costs(args.import_repeats)
    for name, figure in imports.items():
        shown = f"{figure['median_s']:.3f} s (min {figure['min_s']:.3f}, max {figure['max_s']:.3f})" \
            if isinstance(figure, dict) else figure
        print(f"{name:<45} {shown}")
    work = Path(tempfile.mkdtemp(prefix="sdxl-tui-startup-"))
    try:
        model, dataset_toml = prepare(work, args.model)
        result = cold_and_warm(work, model, dataset_toml, args.repeats)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result))
    print(f"disk caches save {result['warm_saves_s']:.2f} s of {result['median']['cold']['total']:.2f} s "
          f"(caching phase {result['caching_speedup']:.1f}x faster)")
    if args.json:
        from bench_env import environment

        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"environment": environment(), "imports": imports, "train": result},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
