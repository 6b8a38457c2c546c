"""Snapshots of every wizard screen at 80×24 and 120×40 (pytest-textual-snapshot).

Everything shown is pinned: the cursor does not blink, the GPU is "CPU", the model is a Hub
id (nothing to read from disk), and the demo dataset sits in the working directory so every
path on screen is relative. Update with `pytest --snapshot-update` after looking at the SVGs.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import wizard_keys as keys

from sdxl_tui.app import WizardApp
from sdxl_tui.gpu_info import CPU
from sdxl_tui.screens.start import list_templates

SIZES = [(80, 24), (120, 40)]
HUB_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    from engine.demo.dataset import make_demo_dataset

    make_demo_dataset(tmp_path / "data", resolution=64)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # nothing cached: the Hub id stays "not downloaded"
    return tmp_path


def make_app() -> WizardApp:
    return WizardApp(cursor_blink=False, gpu=CPU, save_dir=Path("runs"))


def step_keys() -> list[list[keys.Item]]:
    """Each step's keys as a user fills it; the last key of each (Ctrl+N) moves on."""
    return [keys.model_step(Path(HUB_MODEL)), keys.dataset_step(Path("data/images")), keys.network_step(),
            keys.learning_step(), keys.memory_step(), keys.samples_step(Path("out"))]


def keys_on_step(step: int) -> list[keys.Item]:
    """The keys that fill in `step` (but do not leave it), as a user would."""
    fill = step_keys()
    sequence = fill[step - 1][:-1] if step <= len(fill) else []
    if step == 1:
        sequence.append("tab")  # leaving the model field detects the model
    return sequence


async def settle(pilot) -> None:
    """Wait for the plan/GPU/model workers so the info panel is final."""
    app = pilot.app
    deadline = time.monotonic() + 60
    await pilot.pause()
    while time.monotonic() < deadline:
        busy = [w for w in app.screen.workers if not w.is_finished]
        needs_plan = getattr(app.screen, "NEEDS_PLAN", False)
        if not busy and (not needs_plan or app.screen.current_plan is not None):
            break
        await pilot.pause(0.1)
    await pilot.pause()
    app.screen.scroll_home(animate=False)
    for scroller in app.screen.query("VerticalScroll"):
        scroller.scroll_home(animate=False)
    await pilot.pause()


def _run_before(step: int):
    """Step 1 is reached from the start screen by keys; a later step opens on the draft the earlier steps' keys make
    (keys.draft_before, which the walks in test_wizard_pilot.py check against those keys), then is filled in by
    keys. Pressing through the earlier steps would cost a second or more a step and show nothing more here."""
    async def run_before(pilot) -> None:
        if step == 1:
            await keys.play(pilot, keys.start_defaults(len(list_templates())))
        else:
            await pilot.pause()
            pilot.app.begin(keys.draft_before(step, Path(HUB_MODEL), Path("data/images"), Path("out")), step)
            await pilot.pause()
        await keys.play(pilot, keys_on_step(step))
        await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_start_screen(snap_compare, workdir, size):
    assert snap_compare(make_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("step", range(1, 8), ids=lambda n: f"step{n}")
def test_step_screen(snap_compare, workdir, step, size):
    assert snap_compare(make_app(), terminal_size=size, run_before=_run_before(step))


def test_open_config_prompt(snap_compare, workdir):
    async def run_before(pilot) -> None:
        await keys.play(pilot, ["o", *keys.typed("data/")])
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
