"""What the validation loss costs at its default cadence, in the CPU demo config (figures only).

    .venv/bin/python bench/validation_cost.py                    # the demo: 60 steps, validation_split 0.1
    .venv/bin/python bench/validation_cost.py --steps 8 --repeats 1   # a quick check that it works
    .venv/bin/python bench/validation_cost.py --json bench/results/cpu_validation_cost.json

The demo config is `sdxl-tui demo`'s (sdxl_tui/templates/cpu-demo.toml on the tiny model and the
demo dataset), with `validation_split` added to the dataset TOML. Two runs hold out the same
images and train the same batches (the LoRA is bit-identical, tests/engine/train/
test_validation_loss.py): "validated" at the default cadence (the end of every epoch), "plain"
with validate_every_n_epochs beyond the run's length (no evaluation). Each runs in its own
process; the pair is repeated `--repeats` times, interleaved, and the medians are reported:

- cost: the validation time (the Validation events' seconds) over the training phase's wall time
  without it (Phase "training" to the end of the last step), in the validated run;
- overhead: the validated run's training-phase wall time over the plain run's, minus 1 (the same
  figure measured end to end; noisier on a shared machine).
The issue's budget is a cost under 10 %.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NEVER = 10_000  # validate_every_n_epochs beyond any demo run: the plain run evaluates nothing


def demo_config(work: Path, steps: int, split: float):
    """The demo's RunConfig (template + demo files in `work`) with `split` held out."""
    from engine.config.schema import resolve_relative_paths
    from engine.config.toml_file import load_config
    from sdxl_tui.commands.demo import ensure_demo_files, write_demo_config

    ensure_demo_files(work)
    dataset = work / "dataset" / "dataset.toml"
    held = work / "dataset" / f"dataset_split_{split:g}.toml"
    held.write_text(dataset.read_text().replace("[[datasets]]\n", f"[[datasets]]\nvalidation_split = {split}\n", 1))
    cfg = resolve_relative_paths(load_config(write_demo_config(work, steps)), work)
    return cfg.with_values(dataset_config=str(held), sample_every_n_steps=None, sample_every_n_epochs=None,
                           sample_at_first=False, sample_prompts="")


def one(kind: str, work: str, steps: int, split: float) -> dict:
    from engine.events.types import TRAINING, Phase, Step, Validation
    from engine.train.run import run

    events: list = []
    with tempfile.TemporaryDirectory() as out:
        cfg = demo_config(Path(work), steps, split).with_values(output_dir=out)
        if kind == "plain":
            cfg = cfg.with_values(validate_every_n_epochs=NEVER)
        result = run(cfg, events.append)
    if not result.ok:
        return {"kind": kind, "error": str(result.error)}
    began = next(e.time for e in events if isinstance(e, Phase) and e.name == TRAINING)
    last_step = max(e.time for e in events if isinstance(e, Step))
    validations = [e for e in events if isinstance(e, Validation)]
    # the epoch validation of the last epoch comes after its last step: count it in the phase
    ended = max([last_step, *(v.time for v in validations)])
    validation = sum(v.seconds for v in validations)
    return {"kind": kind, "training_seconds": ended - began, "validation_seconds": validation,
            "evaluations": len(validations), "batches": sum(v.batches for v in validations)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "build" / "bench" / "demo"), help="folder for the demo files")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's, 60)")
    parser.add_argument("--split", type=float, default=0.1, help="validation_split (default 0.1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures and the machine here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.work, args.steps, args.split)))
        return 0
    from bench_env import environment

    rows: dict[str, list[dict]] = {"validated": [], "plain": []}
    for _ in range(args.repeats):
        for kind in rows:
            command = [sys.executable, __file__, "--one", kind, "--work", args.work, "--split", str(args.split)]
            if args.steps is not None:
                command += ["--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"error": done.stderr.strip().splitlines()[-1:]}
            if "error" in row:
                print(f"{kind}: failed: {row['error']}")
                return 1
            rows[kind].append(row)
            print(json.dumps(row))
    validated, plain = rows["validated"], rows["plain"]
    cost = statistics.median(r["validation_seconds"] / (r["training_seconds"] - r["validation_seconds"])
                             for r in validated)
    overhead = (statistics.median(r["training_seconds"] for r in validated)
                / statistics.median(r["training_seconds"] for r in plain) - 1)
    print(f"\n{validated[0]['evaluations']} evaluations ({validated[0]['batches']} batches x 4 timesteps) per run")
    print(f"validation cost: {cost:.1%} of the training time (median of {len(validated)}); budget 10 %")
    print(f"end-to-end overhead against the plain run: {overhead:+.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": environment(), "steps": args.steps, "split": args.split,
                                               "cost": cost, "overhead": overhead, "runs": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
