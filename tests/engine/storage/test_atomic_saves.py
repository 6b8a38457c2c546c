"""kill -9 a real `sdxl-tui train` during its saves: whatever moment the process dies, every
LoRA file under its final name loads, the newest complete state loads, and `sdxl-tui resume`
skips an unfinished state folder, says so, and carries on from the last good one."""
from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Callable

import pytest
from cli_process import CliProcess, last
from train_helpers import tiny_config

from engine.config.toml_file import save_config

SLOW_SAVE = "SDXL_TUI_TEST_SAVE_DELAY"
# what a kill interrupts is the save, whatever trains: UNet-only with cached text outputs is cheapest
FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def _check_everything_loads(out: Path) -> dict:
    """Load every final-named file; return what was found (for the figures)."""
    from safetensors.torch import load_file

    from engine.outputs import checkpoint
    from engine.outputs.resume import scan_states

    loras = sorted(out.glob("*.safetensors"))
    for path in loras:
        assert load_file(str(path)), path
    complete, incomplete = scan_states(out)
    for folder in complete:
        checkpoint.load_state(folder)
    from engine.config.toml_file import load_config

    load_config(out / "config.toml")
    return {"loras": len(loras), "complete": [p.name for p in complete], "incomplete": incomplete,
            "temp_files": sorted(p.name for p in out.glob(".*.tmp"))}


def _resume_notes(out: Path, since: int) -> list[str]:
    from cli_process import read_events

    return [e["message"] for e in read_events(out)[since:] if e["type"] == "Warning_"]


@pytest.mark.e2e
@pytest.mark.slow
def test_kill_9_in_the_middle_of_a_state_save_then_resume_skips_it_and_says_so(tmp_path, tiny_model,
                                                                              demo_dataset):
    out = tmp_path / "out"
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1000, save_every_n_steps=1,
                      save_state=True, **FAST)
    config = save_config(cfg, tmp_path / "run.toml")
    # each part of a save takes 0.5 s more: once the step-2 state's LoRA part is on disk, the delays of
    # its three parts (1.5 s) stand between the kill and its COMPLETE marker
    run = CliProcess.start(["train", str(config), "--plain"], out, **{SLOW_SAVE: "0.5"})
    run.wait_for(lambda: (out / "state" / "step-00000001" / "COMPLETE").exists(), what="the state of step 1")
    # the step-2 state is being written: its LoRA part is on disk, the optimizer not yet
    run.wait_for(lambda: any((d / "lora.safetensors").exists() for d in run.staging_dirs()
                             if d.name == ".step-00000002.tmp"), what="the step-2 state save")
    run.process.send_signal(signal.SIGKILL)
    run.process.wait()
    found = _check_everything_loads(out)
    print(f"killed mid-save: {found}")
    assert found["complete"] == ["step-00000001"]
    assert [i.path.name for i in found["incomplete"]] == [".step-00000002.tmp"]

    events_before = len(run.events())
    resumed = CliProcess.start(["resume", str(out), "--plain", "--set", "max_train_steps=3"], out)
    returncode, stdout, stderr = resumed.finish(timeout=300)
    assert returncode == 0, stderr[-3000:]
    notes = _resume_notes(out, events_before)
    assert any("ignoring incomplete saved state .step-00000002.tmp (a save that never finished)" in n
               for n in notes), notes
    assert "ignoring incomplete saved state" in stdout + stderr
    started = [e for e in resumed.events() if e["type"] == "RunStarted"]
    assert started[-1]["resumed_from_step"] == 1
    assert last(resumed.events(), "Finished")["step"] == 3
    after = _check_everything_loads(out)
    assert not after["incomplete"], "the stale folder is cleared once a new state lands"


# Every part of a save takes PART_SECONDS more (the test hook sleeps after writing each part), so
# each moment below is a window of that length a kill can be aimed into.
PART_SECONDS = 0.5


def _staging_holds(run: CliProcess, newer_than: int, present: str, absent: str) -> Callable[[], bool]:
    def check() -> bool:
        return any((d / present).exists() and not (d / absent).exists() for d in run.staging_dirs()
                   if int(d.name.split("-")[1].split(".")[0]) > newer_than)
    return check


# Inside a state save: after one of its parts is written (what the folder being written holds then, and
# what it does not hold yet). One of them is drawn per run: a kill anywhere in the staging folder is the
# same case for `resume` (the folder is skipped and named); the test above kills at the first one.
STATE_PARTS = {
    "its LoRA part written": ("lora.safetensors", "optimizer.pt"),
    "its optimizer written": ("optimizer.pt", "config.toml"),
    "every part written, no COMPLETE marker yet": ("config.toml", "COMPLETE"),
}
IN_A_STATE_SAVE = "in a state save"
# up to 1.5 s after a state landed: its older states pruned, the next step trained, its LoRA file written
AFTER_A_STATE = "after a state landed"


@pytest.mark.e2e
@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_broken_file_under_a_final_name(tmp_path, tiny_model,
                                                                               demo_dataset):
    """Every step saves a LoRA and a state; the process is killed at a random moment inside a state
    save, resumed, then killed at a random moment between state saves (old states pruned, training,
    a LoRA file written): the two cases `resume` tells apart (an unfinished folder to skip, or none)."""
    out = tmp_path / "out"
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1000, save_every_n_steps=1,
                      save_state=True, **FAST)
    config = save_config(cfg, tmp_path / "run.toml")
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    moments = [IN_A_STATE_SAVE, AFTER_A_STATE]
    print(f"seed {seed}")  # with each kill's moment below: shown when the test fails
    mid_save, steps, prior_incomplete, kills = 0, [0], [], []
    for attempt, moment in enumerate(moments):
        args = ["train", str(config), "--plain"] if attempt == 0 else ["resume", str(out), "--plain"]
        before = len(CliProcess(None, out).events()) if attempt else 0
        run = CliProcess.start(args, out, **{SLOW_SAVE: str(PART_SECONDS)})
        newest = steps[-1]
        # a newer state lands first: each attempt makes progress, and `resume` needs one complete state
        # (without one it refuses, exit 73, by design)
        run.wait_for(lambda: (out / "state" / f"step-{newest + 1:08d}" / "COMPLETE").exists(),
                     what=f"attempt {attempt}: the state of step {newest + 1}")
        if moment == IN_A_STATE_SAVE:
            part = rng.choice(sorted(STATE_PARTS))
            moment = f"{moment}, {part}"
            run.wait_for(_staging_holds(run, newest + 1, *STATE_PARTS[part]), what=f"attempt {attempt}: {moment}")
            delay = rng.uniform(0.0, PART_SECONDS / 2)
        else:
            delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)
        run.process.send_signal(signal.SIGKILL)
        run.process.wait()
        kills.append(f"{moment} + {delay:.2f} s")
        print(f"kill {attempt + 1}: {kills[-1]}")
        found = _check_everything_loads(out)
        in_save = bool(found["temp_files"] or found["incomplete"])
        mid_save += in_save
        steps.append(int(found["complete"][-1].split("-")[1]) if found["complete"] else 0)
        print(f"  newest complete state {found['complete'][-1:]}, "
              f"{found['loras']} LoRA files, mid-save leftovers: "
              f"{found['temp_files'] + [i.path.name for i in found['incomplete']]}")
        if prior_incomplete:  # what the previous kill left, this resume named
            assert any("ignoring incomplete" in n for n in _resume_notes(out, before)), \
                (f"seed {seed}, kills {kills}", _resume_notes(out, before))
        prior_incomplete = found["incomplete"]
    print(f"seed {seed}: {len(moments)} kill -9 attempts ({kills}), {mid_save} of them inside a save; "
          "every final file loaded each time")
    assert steps[-1] > steps[1], f"resume after each kill kept making progress (seed {seed}, kills {kills})"
