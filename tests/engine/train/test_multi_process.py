"""Two training processes on the CPU (gloo), as `torchrun` / `accelerate launch` start them on
N GPUs: accelerate's DDP keeps the LoRA equal on both ranks, each rank trains on its own
batches, rank 0 alone writes files and events, and the effective batch and step counts are
reported for the whole job.

Run A goes through tests/multi_process_worker.py (engine.train.run, instrumented to record each
rank's batches and weights); rank 0 alone asks it for a save and a stop on the way, as the
dashboard's control file would. Run B is `accelerate launch --multi_gpu --num_processes 2 -m
sdxl_tui train` on the same config, which must give the same LoRA (seeded, deterministic).

Every launch runs a copy of the source taken once per module (`source_snapshot`): run B is compared
with run A's files, so both must run the same code even if the checkout is edited while the suite runs
(a full run once failed that way: run A trained with the code before a change to the RNG draws, run B
with the code after it).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.events.types import Finished, RunStarted, Step, event_from_json

REPO = Path(__file__).resolve().parents[3]
WORKER = REPO / "tests" / "multi_process_worker.py"
STEPS = 12  # 2 epochs; the loss falls to ~0.6 of its start by then (0.9 is asserted)
MAX_STEPS = 18  # what run A is set to train: rank 0 alone asks for a stop after step STOP_ASKED_AT
LOG_EVERY = 2  # processes agree on stops and saves at logging points only
SAVE_ASKED_AT, STOP_ASKED_AT = 1, STEPS - 1  # rank 0 alone asks: done by both ranks at the next logging point
SAVED_AT = 6  # run A also saves its LoRA every 6 steps
LAUNCH_TIMEOUT = 300

# each launch starts two Python processes that import torch + diffusers
pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def source_snapshot(tmp_path_factory) -> Path:
    """engine/, sdxl_tui/ (package data and compiled files included) and the worker script, copied
    once: the folder every launch of this module imports from."""
    root = tmp_path_factory.mktemp("source")
    for package in ("engine", "sdxl_tui"):
        shutil.copytree(REPO / package, root / package)
    shutil.copy2(WORKER, root / WORKER.name)
    return root


def _env(source: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(source))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _launch(args: list[str], cwd: Path, source: Path, **env: str) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env={**_env(source), **env}, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done


def _write_config(tmp: Path, tiny_model, demo_dataset, name: str, **options) -> Path:
    from engine.config.schema import RunConfig
    from engine.config.toml_file import save_config

    cfg = RunConfig().with_values(
        pretrained_model_name_or_path=str(tiny_model.diffusers_dir), dataset_config=str(demo_dataset.dataset_toml),
        output_dir=str(tmp / name / "out"), output_name="lora", max_train_steps=MAX_STEPS, mixed_precision="no",
        gradient_checkpointing=False, optimizer_type="AdamW", learning_rate=1e-2, network_dim=8, network_alpha=8.0,
        network_args=["conv_dim=8", "conv_alpha=8"], save_precision="fp32", log_every_n_steps=LOG_EVERY, seed=7)
    cfg = cfg.with_values(**options) if options else cfg
    path = tmp / name / "run.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path)
    return path


def _events(out: Path) -> list:
    return [event_from_json(line) for line in (out / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, tiny_model, demo_dataset, source_snapshot):
    """The torchrun job every test but the accelerate one looks at: STEPS steps of MAX_STEPS, then
    stopped (asked of rank 0 alone after step STOP_ASKED_AT); a save asked after step SAVE_ASKED_AT."""
    tmp = tmp_path_factory.mktemp("two_processes")
    config = _write_config(tmp, tiny_model, demo_dataset, "a", save_every_n_steps=SAVED_AT)
    records = tmp / "a" / "records"
    _launch([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             str(source_snapshot / WORKER.name), str(config), str(records)], cwd=tmp, source=source_snapshot,
            WORKER_SAVE_NOW_AT=str(SAVE_ASKED_AT), WORKER_STOP_AT=str(STOP_ASKED_AT))
    return tmp, config.parent / "out", records


def _rank_file(records: Path, rank: int, suffix: str) -> Path:
    return records / f"rank{rank}.{suffix}"


def test_both_ranks_train_in_one_ddp_job_and_end_with_the_same_lora(run_a):
    from safetensors.torch import load_file

    _, _, records = run_a
    results = [json.loads(_rank_file(records, r, "result.json").read_text()) for r in (0, 1)]
    for result in results:
        assert result["ok"], result["error"]
        assert result["step"] == STEPS
        assert result["ddp_wrapped"] and result["ddp_synced_parameters"] > 0
    first, second = (load_file(str(_rank_file(records, r, "lora.safetensors"))) for r in (0, 1))
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), f"{key} differs between ranks: gradients were not averaged"
    # every part trained (text encoder adapters included), so DDP averaged them all
    for prefix in ("lora_unet_", "lora_te1_", "lora_te2_"):
        ups = [v for k, v in first.items() if k.startswith(prefix) and k.endswith("lora_up.weight")]
        assert any(v.abs().max() > 0 for v in ups), f"{prefix} adapters never moved"


def test_each_rank_trains_on_its_own_share_of_every_epoch(run_a, demo_dataset):
    _, out, records = run_a
    batches = [[json.loads(line) for line in _rank_file(records, r, "batches.jsonl").read_text().splitlines()]
               for r in (0, 1)]
    assert len(batches[0]) == len(batches[1]) == STEPS  # batch size 2 per rank, no accumulation
    started = [e for e in _events(out) if isinstance(e, RunStarted)][0]
    per_epoch = started.steps_per_epoch
    for epoch in range(STEPS // per_epoch):
        window = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        mine = [sorted(p for batch in batches[r][window] for p in batch) for r in (0, 1)]
        # demo dataset: 12 images x 2 repeats, 3 buckets of 8 = 12 batches of 2, 6 per rank
        assert sorted(mine[0] + mine[1]) == sorted(2 * [str(p) for p in demo_dataset_images(demo_dataset)])
        assert mine[0] != mine[1]


def demo_dataset_images(demo_dataset) -> list[Path]:
    return sorted(p for p in Path(demo_dataset.image_dir).iterdir() if p.suffix == ".png")


def test_rank_zero_alone_writes_files_and_events(run_a):
    _, out, records = run_a
    events = _events(out)
    assert int(_rank_file(records, 0, "emitted").read_text()) == len(events)  # what rank 0 emitted is the log
    assert int(_rank_file(records, 1, "emitted").read_text()) == 0
    assert sum(isinstance(e, RunStarted) for e in events) == 1
    assert [e.step for e in events if isinstance(e, Step)] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    every_n = [f"lora-step{s:08d}.safetensors" for s in range(SAVED_AT, STEPS, SAVED_AT)]
    asked = [f"lora-step{s:08d}.safetensors" for s in (SAVE_ASKED_AT + 1, STEPS)]  # the save and the stop
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted([*every_n, *asked])


def test_effective_batch_and_steps_are_those_of_the_whole_job(run_a, tiny_model, demo_dataset):
    _, out, _ = run_a
    started = [e for e in _events(out) if isinstance(e, RunStarted)][0]
    assert started.num_processes == 2 and started.batch_size == 2 and started.gradient_accumulation_steps == 1
    assert started.effective_batch_size == 4
    assert started.steps_per_epoch == 6  # 12 batches per epoch, 6 on each rank
    assert started.total_steps == MAX_STEPS and started.total_epochs == MAX_STEPS // 6
    step = [e for e in _events(out) if isinstance(e, Step)][-1]
    assert step.images_per_second == pytest.approx(4 / step.seconds_per_step)
    # the plan counts the same way before any process starts
    from engine.config.toml_file import load_config
    from engine.plan.run_plan import make_plan, plan_lines

    plan = make_plan(load_config(out / "config.toml"), world_size=2)
    assert (plan.batches_per_epoch, plan.steps_per_epoch, plan.total_steps) == (6, 6, MAX_STEPS)
    assert "Effective batch: 2 per process × 2 processes × 1 accumulation = 4 images per step" in plan_lines(plan)


def test_the_lora_file_loads_and_the_loss_went_down(run_a):
    from engine.lora.file import load_lora

    _, out, records = run_a
    tensors, metadata = load_lora(out / f"lora-step{STEPS:08d}.safetensors")  # saved at the stop
    from safetensors.torch import load_file

    rank0 = load_file(str(_rank_file(records, 0, "lora.safetensors")))
    assert tensors.keys() == rank0.keys()
    assert all(torch.equal(tensors[k].float(), rank0[k]) for k in rank0)
    losses = [e.loss for e in _events(out) if isinstance(e, Step)]
    quarter = len(losses) // 4
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    print(f"two processes: mean loss of the first {quarter} logged intervals {first:.3f} -> last {quarter} {last:.3f}")
    assert last < 0.9 * first


def test_accelerate_launch_of_the_cli_gives_the_same_lora_again(run_a, tiny_model, demo_dataset, source_snapshot):
    """`accelerate launch --multi_gpu --num_processes 2 -m sdxl_tui train` (what docs/multi_gpu.md
    tells users) trains the same seeded job to the same weights, and only rank 0 prints. To keep it
    short it trains to run A's first save, the one asked after step SAVE_ASKED_AT (same seed, constant
    learning rate: the first steps do not depend on max_train_steps)."""
    from safetensors.torch import load_file

    tmp, out_a, _ = run_a
    until = SAVE_ASKED_AT + 1
    config = _write_config(tmp, tiny_model, demo_dataset, "b", max_train_steps=until)  # run A's, to step 2
    done = _launch([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "-m", "sdxl_tui", "train", str(config), "--plain"], cwd=tmp, source=source_snapshot)
    out_b = config.parent / "out"
    a = load_file(str(out_a / f"lora-step{until:08d}.safetensors"))
    b = load_file(str(out_b / "lora.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key}: a seeded two-process run is not repeatable"
    last_step = [line for line in done.stdout.splitlines() if line.startswith(f"step {until}/{until}")]
    assert len(last_step) == 1, f"expected one process to print progress:\n{done.stdout[-2000:]}"


def test_a_stop_or_save_asked_of_rank_zero_alone_is_done_by_both_ranks_at_the_same_step(run_a):
    """The dashboard's control file reaches rank 0 only. Run A logs every 2 steps: the save asked
    after step 1 happens after step 2 and the stop asked after step 11 ends both ranks after step 12:
    no rank is left waiting for the other in a gradient all-reduce."""
    _, out, records = run_a
    results = [json.loads(_rank_file(records, r, "result.json").read_text()) for r in (0, 1)]
    assert [(r["ok"], r["stopped"], r["step"]) for r in results] == [(True, True, STEPS)] * 2
    assert STOP_ASKED_AT % LOG_EVERY and SAVE_ASKED_AT % LOG_EVERY  # asked between logging points
    saved = sorted(p.name for p in out.glob("*.safetensors"))
    for step in (SAVE_ASKED_AT + 1, STOP_ASKED_AT + 1):  # at the next logging point, with its state
        assert f"lora-step{step:08d}.safetensors" in saved, saved
        assert (out / "state" / f"step-{step:08d}" / "COMPLETE").is_file()
    assert f"lora-step{SAVE_ASKED_AT:08d}.safetensors" not in saved
    assert sorted(p.name for p in (out / "state").iterdir()) == [f"step-{s:08d}" for s in (2, STEPS)]
    finished = [e for e in _events(out) if isinstance(e, Finished)]
    assert len(finished) == 1 and finished[0].stopped and finished[0].step == STEPS
