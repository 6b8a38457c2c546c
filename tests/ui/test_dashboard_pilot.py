"""The dashboard's behaviour: keys, commands, coalescing, and a real training run.

Scripted tests feed events through the same watching path `sdxl-tui watch` uses (an
events.jsonl written here, the control file read back); the slow test trains the tiny model
from the dashboard itself, saves on request and stops.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import dashboard_script as script
import pytest

from engine.control.command_file import control_path
from engine.events import types as ev
from sdxl_tui.dashboard_app import DashboardApp
from sdxl_tui.messages import EngineEvent
from sdxl_tui.run_model import final_lines
from sdxl_tui.screens.dashboard import DashboardScreen
from sdxl_tui.screens.dashboard_modals import ConfigScreen, ConfirmScreen
from sdxl_tui.widgets.log_pane import LogPane

SIZE = (120, 40)


async def wait_until(pilot, predicate, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate}")
        await pilot.pause(0.05)


def write_events(output_dir: Path, events) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "events.jsonl", "a", encoding="utf-8") as handle:
        for event in events:
            handle.write(event.to_json() + "\n")


def sent_commands(output_dir: Path) -> list[str]:
    path = control_path(output_dir)
    if not path.exists():
        return []
    return [json.loads(line)["command"] for line in path.read_text().splitlines()]


def test_metric_messages_coalesce_without_losing_steps():
    first, second, third = (EngineEvent(script.step_event(i)) for i in (1, 2, 3))
    assert first.can_replace(second) and second.can_replace(third)
    assert [e.step for e in third.events] == [1, 2, 3]
    saved = EngineEvent(ev.Saved(path="x", step=3))
    assert not third.can_replace(saved) and not saved.can_replace(EngineEvent(script.step_event(4)))
    progress = EngineEvent(ev.PhaseProgress(name=ev.CACHING_LATENTS, done=1, total=9))
    assert not progress.can_replace(EngineEvent(script.step_event(5)))  # kinds never mix


def test_watching_keys_send_commands_through_the_control_file(tmp_path):
    run_dir = tmp_path / "run"
    write_events(run_dir, script.early())
    (run_dir / "config.toml").write_text("# the run's config\n[training]\nmax_train_steps = 400\n")

    async def scenario():
        screen = DashboardScreen.watching(run_dir, bell=False, nvml=False)
        app = DashboardApp(screen)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen.view.step == 12, what="step 12 from events.jsonl")
            await pilot.press("s")
            await pilot.press("p")
            await pilot.press("x")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")  # cancel: nothing sent
            assert sent_commands(run_dir) == ["save_now", "sample_now"]
            await pilot.press("x", "y")
            assert sent_commands(run_dir) == ["save_now", "sample_now", "stop"]
            assert screen.stopping
            await pilot.press("l")
            assert not screen.query_one(LogPane).display
            await pilot.press("l")
            assert screen.query_one(LogPane).display
            await pilot.press("c")
            assert isinstance(app.screen, ConfigScreen)
            assert "max_train_steps = 400" in app.screen.query_one("#config-text").text
            assert "read-only while running" in app.screen.query_one("Vertical").border_title
            await pilot.press("escape")
            # the run writes more: the follower picks it up live
            write_events(run_dir, [script.step_event(s) for s in range(13, 31)])
            await wait_until(pilot, lambda: screen.view.step == 30, what="step 30 appended later")
            await pilot.press("q")  # watching: leaving does not stop the run
        return app.return_value

    assert asyncio.run(scenario()) is None
    assert sent_commands(tmp_path / "run")[-1] == "stop"


def test_finished_run_opens_as_a_report_with_commands_disabled(tmp_path, monkeypatch):
    run_dir = tmp_path / "done"
    write_events(run_dir, script.finished())
    bells = []

    async def scenario():
        # a minute after the ending: still news, so the bell rings
        clock = lambda: script.finished()[-1].time + 30  # noqa: E731
        screen = DashboardScreen.watching(run_dir, bell=True, nvml=False, clock=clock)
        app = DashboardApp(screen)
        monkeypatch.setattr(app, "bell", lambda: bells.append(1))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen.source_ended, what="the replay to end")
            assert screen.view.final.status == "finished"
            assert screen.mode_label.strip() == "report"
            assert screen.check_action("stop", ()) is None  # shown disabled
            await pilot.press("x", "s", "p")
            assert not isinstance(app.screen, ConfirmScreen)
            assert sent_commands(run_dir) == []
            assert screen.query_one("#final-banner").display
            banner = " ".join(text for text, _ in final_lines(screen.view))
            assert "Finished: 400 steps" in banner and "lora.safetensors" in banner
            await pilot.press("q")
        return app.return_value

    result = asyncio.run(scenario())
    assert result.status == "finished" and result.lora_path.endswith("lora.safetensors")
    assert bells == [1]


def test_an_old_run_opens_without_a_bell(tmp_path, monkeypatch):
    run_dir = tmp_path / "old"
    write_events(run_dir, script.failed())
    bells = []

    async def scenario():
        screen = DashboardScreen.watching(run_dir, bell=True, nvml=False)  # real clock: long after
        app = DashboardApp(screen)
        monkeypatch.setattr(app, "bell", lambda: bells.append(1))
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen.source_ended, what="the replay to end")
            assert screen.view.final.status == "failed"
            await pilot.press("q")

    asyncio.run(scenario())
    assert bells == []


def test_no_bell_when_the_user_opted_out(monkeypatch):
    from sdxl_tui.screens.dashboard import bell_wanted

    monkeypatch.setenv("SDXL_TUI_NO_BELL", "1")
    assert not bell_wanted(None) and bell_wanted(True)
    monkeypatch.delenv("SDXL_TUI_NO_BELL")
    assert bell_wanted(None) and not bell_wanted(False)


def test_a_flood_of_steps_is_folded_completely(tmp_path):
    """10,000 steps replayed at once: coalescing keeps the UI responsive, no step is lost."""
    events = [script.step_event(s, total=10_000) for s in range(1, 10_001)]

    async def scenario():
        screen = DashboardScreen(None, None, events_source=lambda stop: iter(events),
                                 clock=lambda: events[-1].time, bell=False, nvml=False, output_dir=str(tmp_path))
        app = DashboardApp(screen)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen.source_ended, timeout=60, what="10,000 steps")
            await pilot.pause()
            view = screen.view
            assert view.events_seen == 10_000 and view.step == 10_000
            assert view.loss_steps[0] <= 8 and view.loss_steps[-1] == 10_000
            await pilot.press("q")

    asyncio.run(scenario())


@pytest.mark.e2e
@pytest.mark.slow
def test_dashboard_trains_the_tiny_model_saves_on_request_and_stops(tiny_model, demo_dataset, tmp_path):
    output_dir = tmp_path / "run"
    cfg = script.tiny_run_config(tiny_model, demo_dataset, output_dir)
    screen = DashboardScreen(cfg, None, bell=False, nvml=False)
    app = DashboardApp(screen)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            try:
                await wait_until(pilot, lambda: screen.view.step >= 1 or screen.view.final, 600, "the first step")
                assert screen.view.final is None, screen.view.final
                await pilot.press("q")  # leaving an owned, running run asks first
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("n")
                assert app.screen is screen and screen.view.running
                await pilot.press("s")
                await wait_until(pilot, lambda: any(s.kind == "lora" for s in screen.view.checkpoints)
                                 or screen.view.final, 300, "the save-now LoRA")
                await pilot.press("x")
                assert isinstance(app.screen, ConfirmScreen)
                await pilot.press("y")
                # The confirm dialog answers through a callback a message cycle later.
                await wait_until(pilot, lambda: screen.stopping or screen.view.final is not None, 30,
                                 "the stop request")
                await wait_until(pilot, lambda: screen.view.final is not None, 300, "the run to stop")
                await wait_until(pilot, lambda: screen.result is not None, 30, "engine.train.run to return")
                await pilot.press("q")  # the run is over: leave without asking
            finally:
                screen.control.request_stop("test ended")
        return app.return_value

    final = asyncio.run(scenario())
    view = screen.view
    assert final is not None and final.status == "stopped", final
    # save now wrote a LoRA (and its state) mid-run; the stop wrote the last one
    saved_now = [s for s in view.checkpoints if s.kind == "lora"][0]
    assert Path(saved_now.path).is_file() and saved_now.step <= final.step
    assert any(s.kind == "state" for s in view.checkpoints)
    assert Path(final.lora_path).is_file() and Path(final.lora_path).parent == output_dir.resolve()
    assert screen.result.ok and screen.result.stopped and screen.result.lora_path == final.lora_path
    # the same story is on disk for anyone watching later
    from engine.events.follow import read_events

    on_disk = read_events(output_dir)
    assert isinstance(on_disk[-1], ev.Finished) and on_disk[-1].stopped
    assert (output_dir / "config.toml").is_file()


def render_text(renderable, width: int = 100) -> str:
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def test_memory_gauge_shows_cuda_figures_and_the_whole_card():
    from sdxl_tui.widgets.memory_gauge import CardUsage, NvmlProbe, memory_table

    memory = script.step_event(10).memory
    text = render_text(memory_table(memory, CardUsage(used=20 * script.GB, total=24 * script.GB, name="RTX 4090")))
    for expected in ("allocated", "reserved", "12.0 GB", "peak", "10.6 GB", "whole card", "20.0 GB",
                     "RTX 4090", "24.0 GB"):
        assert expected in text
    cpu = render_text(memory_table(ev.Memory(device="cpu", rss=600 * 1000 ** 2), None))
    assert "process RSS" in cpu and "600.0 MB" in cpu
    probe = NvmlProbe()  # without a GPU or driver this is simply "not available"
    assert probe.usage("cpu") is None
    probe.close()


def test_a_quiet_watched_run_says_so():
    from sdxl_tui.run_model import fold
    from sdxl_tui.widgets.run_status import header_text

    events = script.early()
    assert "no events for" not in header_text(fold(events, now=events[-1].time + 5), " watching ").plain
    quiet = header_text(fold(events, now=events[-1].time + 600), " watching ").plain
    assert "no events for 10:00: the run may have ended without saying so" in quiet


def test_an_owned_run_that_cannot_start_says_why_and_what_to_do(demo_dataset, tmp_path):
    from engine.config.schema import RunConfig

    cfg = RunConfig().with_values(pretrained_model_name_or_path=str(tmp_path / "no-such-model"),
                                  dataset_config=str(demo_dataset.dataset_toml), output_dir=str(tmp_path / "out"))
    screen = DashboardScreen(cfg, None, bell=False, nvml=False)
    app = DashboardApp(screen)

    async def scenario():
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: screen.view.final is not None, 120, "the failure")
            await wait_until(pilot, lambda: screen.result is not None, 30,
                             f"engine.train.run to return; log: {[line.message for line in screen.view.log]}")
            assert screen.query_one("#final-banner").display
            await pilot.press("q")  # a failed run: leave without being asked
        return app.return_value

    final = asyncio.run(scenario())
    assert final.status == "failed" and "no-such-model" in final.message
    assert final.hint  # what to do
    assert not screen.result.ok and screen.result.exit_code != 0


def test_captured_prints_lose_progress_bar_frames():
    from sdxl_tui.screens.dashboard import printed_line

    assert printed_line("Loading weights:  50%|#####     | 98/196\r") == ""
    assert printed_line("\rLoading weights: 100%|##########| 196/196 [00:00<00:00]") == ""
    assert printed_line("There are modules in UNet that should be kept in float32\n") == \
        "There are modules in UNet that should be kept in float32"


def test_the_dashboard_works_inside_the_wizard_app(tmp_path):
    """The wizard pushes DashboardScreen(cfg, config_path): styles come with the screen, and
    leaving a finished run goes back to the screen below."""
    app_module = pytest.importorskip("sdxl_tui.app")
    events = script.finished()

    async def scenario():
        app = app_module.WizardApp()
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            below = app.screen
            screen = DashboardScreen(None, None, events_source=lambda stop: iter(events), bell=False, nvml=False)
            app.push_screen(screen)
            await wait_until(pilot, lambda: screen.source_ended, what="the scripted run")
            await pilot.pause()
            assert screen.query_one("#run-status").styles.height.value == 9  # dashboard.tcss applied
            await pilot.press("q")
            await pilot.pause()
            assert app.screen is below

    asyncio.run(scenario())
