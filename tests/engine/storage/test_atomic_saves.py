"""kill -9 a real `sdxl-tui train` during its saves: whatever moment the process dies, every
LoRA file under its final name loads, the newest complete state loads, and `sdxl-tui resume`
skips an unfinished state folder, says so, and carries on from the last good one."""
from __future__ import annotations

import random
import signal
import time
from pathlib import Path

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
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1000, save_every_n_steps=2,
                      save_state=True, **FAST)
    config = save_config(cfg, tmp_path / "run.toml")
    # each part of a save takes 0.75 s more: once the step-4 state's LoRA part is on disk, the delays of
    # its three parts (2.25 s) stand between the kill and its COMPLETE marker
    run = CliProcess.start(["train", str(config), "--plain"], out, **{SLOW_SAVE: "0.75"})
    run.wait_for(lambda: (out / "state" / "step-00000002" / "COMPLETE").exists(), what="the state of step 2")
    # the step-4 state is being written: its LoRA part is on disk, the optimizer not yet
    run.wait_for(lambda: any((d / "lora.safetensors").exists() for d in run.staging_dirs()
                             if d.name == ".step-00000004.tmp"), what="the step-4 state save")
    run.process.send_signal(signal.SIGKILL)
    run.process.wait()
    found = _check_everything_loads(out)
    print(f"killed mid-save: {found}")
    assert found["complete"] == ["step-00000002"]
    assert [i.path.name for i in found["incomplete"]] == [".step-00000004.tmp"]

    events_before = len(run.events())
    resumed = CliProcess.start(["resume", str(out), "--plain", "--set", "max_train_steps=5"], out)
    returncode, stdout, stderr = resumed.finish(timeout=300)
    assert returncode == 0, stderr[-3000:]
    notes = _resume_notes(out, events_before)
    assert any("ignoring incomplete saved state .step-00000004.tmp (a save that never finished)" in n
               for n in notes), notes
    assert "ignoring incomplete saved state" in stdout + stderr
    started = [e for e in resumed.events() if e["type"] == "RunStarted"]
    assert started[-1]["resumed_from_step"] == 2
    assert last(resumed.events(), "Finished")["step"] == 5
    after = _check_everything_loads(out)
    assert not after["incomplete"], "the stale folder is cleared once a new state lands"


@pytest.mark.e2e
@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_broken_file_under_a_final_name(tmp_path, tiny_model,
                                                                               demo_dataset):
    """Every step saves a LoRA and a state, so most of the time goes to saving; the process is
    killed at random moments, then resumed, again and again."""
    out = tmp_path / "out"
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1000, save_every_n_steps=1,
                      save_state=True)
    config = save_config(cfg, tmp_path / "run.toml")
    rng = random.Random(1234)
    attempts, mid_save, steps, prior_incomplete = 5, 0, [], []
    for attempt in range(attempts):
        args = ["train", str(config), "--plain"] if attempt == 0 else ["resume", str(out), "--plain"]
        before = len(CliProcess(None, out).events()) if attempt else 0
        run = CliProcess.start(args, out)
        reached = (steps[-1] if steps else 0) + 1
        run.wait_for(lambda: any(e["type"] == "Step" and e["step"] >= reached for e in run.events()[before:]),
                     what=f"attempt {attempt}: a new step")
        if attempt == 0:  # `resume` needs one complete state (without one it refuses, exit 73, by design)
            run.wait_for(lambda: (out / "state" / "step-00000001" / "COMPLETE").exists(), what="the first state")
        time.sleep(rng.uniform(0.0, 2.0))
        run.process.send_signal(signal.SIGKILL)
        run.process.wait()
        found = _check_everything_loads(out)
        in_save = bool(found["temp_files"] or found["incomplete"])
        mid_save += in_save
        steps.append(int(found["complete"][-1].split("-")[1]) if found["complete"] else 0)
        print(f"kill {attempt + 1}: newest complete state {found['complete'][-1:]}, "
              f"{found['loras']} LoRA files, mid-save leftovers: "
              f"{found['temp_files'] + [i.path.name for i in found['incomplete']]}")
        if prior_incomplete:  # what the previous kill left, this resume named
            assert any("ignoring incomplete" in n for n in _resume_notes(out, before)), _resume_notes(out, before)
        prior_incomplete = found["incomplete"]
    print(f"{attempts} kill -9 attempts, {mid_save} of them inside a save; every final file loaded each time")
    assert steps[-1] > steps[0], "resume after each kill kept making progress"
