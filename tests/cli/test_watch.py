"""Watching a run from another process: the events.jsonl follower, `sdxl-tui watch`, and
(slow) a headless `sdxl-tui train` stopped from the watching dashboard."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from argparse import Namespace
from pathlib import Path

import dashboard_script as script
import pytest

from engine.events import types as ev
from engine.events.follow import EventFileReader, follow_events, read_events
from sdxl_tui.commands import watch
from sdxl_tui.run_model import fold

ROOT = Path(__file__).resolve().parents[2]


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()


def test_reader_waits_for_the_newline_of_a_partial_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    first, second = script.step_event(1).to_json(), script.step_event(2).to_json()
    reader = EventFileReader(path)
    assert reader.read_new() == []  # no file yet
    append(path, first + "\n" + second[:25])
    assert [e.step for e in reader.read_new()] == [1]
    append(path, second[25:] + "\n")
    assert [e.step for e in reader.read_new()] == [2]


def test_corrupt_lines_are_skipped_not_fatal(tmp_path):
    corrupt = '{"type": "Step", "ste\n{"type": "Nope"}\n'
    append(tmp_path / "events.jsonl", corrupt + script.step_event(3).to_json() + "\n")
    events = read_events(tmp_path)
    assert [e.step for e in events if isinstance(e, ev.Step)] == [3]
    # an event type from a newer sdxl-tui is kept as a debug line, not dropped (engine/events/types.py)
    assert [type(e) for e in events] == [ev.Log, ev.Step] and events[0].level == "debug"


def test_follow_replays_from_the_start_then_follows_until_the_run_ends(tmp_path):
    events = script.finished()
    append(tmp_path / "events.jsonl", "".join(e.to_json() + "\n" for e in events[:50]))
    seen: list[ev.Event] = []

    def writer():
        for event in events[50:]:
            append(tmp_path / "events.jsonl", event.to_json() + "\n")
            if isinstance(event, ev.Step) and event.step % 100 == 0:
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    for event in follow_events(tmp_path, poll_interval=0.01):
        seen.append(event)
    thread.join()
    assert seen == events  # every event, in order, ending with Finished


def test_a_resumed_run_replays_past_its_first_ending(tmp_path):
    first = [*script.early(), ev.Finished(time=script.T0 + 40, step=12, stopped=True, lora_path="a.safetensors")]
    second = [ev.RunStarted(time=script.T0 + 100, output_dir=script.OUTPUT_DIR, total_steps=400, resumed_from_step=12),
              *[script.step_event(s) for s in range(13, 21)],
              ev.Finished(time=script.T0 + 200, step=20, lora_path="b.safetensors")]
    append(tmp_path / "events.jsonl", "".join(e.to_json() + "\n" for e in first + second))
    seen = list(follow_events(tmp_path, poll_interval=0.01))
    assert seen == first + second
    view = fold(seen)
    assert view.final.status == "finished" and view.final.lora_path == "b.safetensors"
    assert view.loss_steps == tuple(range(1, 21)) and view.resumed_from_step == 12


def test_follow_stops_when_asked(tmp_path):
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert list(follow_events(tmp_path, stop=stop, poll_interval=0.05)) == []  # the file never appeared
    assert time.monotonic() - started < 2


def test_watch_refuses_a_folder_without_a_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sdxl_tui", "watch", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 73
    assert "events.jsonl not found" in result.stderr


def test_watch_plain_prints_a_finished_run_and_exits(tmp_path):
    append(tmp_path / "events.jsonl", "".join(e.to_json() + "\n" for e in script.finished()))
    result = subprocess.run([sys.executable, "-m", "sdxl_tui", "watch", "--plain", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("step ") for line in lines) == 400
    assert lines[-3].startswith("✔ Finished: 400 steps")


def test_watch_exit_code_follows_a_failed_run(tmp_path, capsys):
    append(tmp_path / "events.jsonl", "".join(e.to_json() + "\n" for e in script.failed()))
    assert watch.run(Namespace(output_dir=str(tmp_path), plain=True, no_bell=True)) == 70  # TrainingDiverged
    assert "What to do: lower the learning rate" in capsys.readouterr().out


# --------------------------------------------------------------------------- slow, end to end

def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.e2e
@pytest.mark.slow
def test_watch_stops_a_headless_training_process(tiny_model, demo_dataset, tmp_path):
    if not (ROOT / "sdxl_tui" / "commands" / "train.py").exists():
        pytest.skip("`sdxl-tui train` is not in this build yet")
    from engine.config.toml_file import save_config
    from sdxl_tui.dashboard_app import DashboardApp
    from sdxl_tui.screens.dashboard import DashboardScreen
    tiny_run_config = script.tiny_run_config

    output_dir = tmp_path / "run"
    # UNet-only with cached text outputs: the stop goes through the control file whatever trains
    config_path = save_config(tiny_run_config(tiny_model, demo_dataset, output_dir, network_train_unet_only=True,
                                              cache_text_encoder_outputs=True), tmp_path / "run.toml")
    log = open(tmp_path / "train.log", "w")
    # one thread: a tiny model on a shared CPU runs many times faster than with a thread pool
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "sdxl_tui", "train", str(config_path)], cwd=ROOT,
                               stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: (output_dir / "events.jsonl").exists() or process.poll() is not None, 300,
                 "events.jsonl from the training process")
        assert process.poll() is None, (tmp_path / "train.log").read_text()
        screen = DashboardScreen.watching(output_dir, bell=False, nvml=False)
        app = DashboardApp(screen)

        async def scenario():
            async with app.run_test(size=(120, 40)) as pilot:
                async def until(predicate, timeout, what):
                    deadline = time.monotonic() + timeout
                    while not predicate():
                        assert time.monotonic() < deadline, f"timed out waiting for {what}"
                        assert process.poll() is None or screen.view.final, (tmp_path / "train.log").read_text()
                        await pilot.pause(0.1)

                await until(lambda: screen.view.step >= 1, 600, "the first step")
                first = screen.view.step
                await until(lambda: screen.view.step > first, 300, "steps to advance")
                await pilot.press("x", "y")  # through output_dir/control.jsonl
                await until(lambda: screen.view.final is not None, 300, "the run to stop")
                await pilot.press("q")
            return app.return_value

        final = asyncio.run(scenario())
        assert process.wait(timeout=120) == 0, (tmp_path / "train.log").read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert final.status == "stopped"
    assert Path(final.lora_path).is_file()
    assert (output_dir / "control.jsonl").read_text().count('"stop"') == 1
    assert isinstance(read_events(output_dir)[-1], ev.Finished)
