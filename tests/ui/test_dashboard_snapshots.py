"""How the dashboard looks, fed a scripted run with a fixed clock (no engine, no GPU).

Update after an intended change with `pytest tests/test_dashboard_snapshots.py --snapshot-update`
and look at the SVGs in __snapshots__ before committing them.
"""
from __future__ import annotations

import time

import dashboard_script as script
import pytest

from sdxl_tui.dashboard_app import DashboardApp
from sdxl_tui.screens.dashboard import DashboardScreen

SIZE = (120, 40)


@pytest.fixture
def scripted_dir(tmp_path, monkeypatch):
    """Run inside a tmp dir holding the scripted run's sample image; log times in UTC."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    script.make_sample_png()
    yield tmp_path
    monkeypatch.undo()
    time.tzset()


def scripted_app(events) -> DashboardApp:
    screen = DashboardScreen(
        None, None, events_source=lambda stop: iter(events), clock=lambda: events[-1].time + 0.5,
        bell=False, nvml=False, output_dir=script.OUTPUT_DIR,
    )
    return DashboardApp(screen)


async def all_events_shown(pilot) -> None:
    screen = pilot.app.dashboard
    for _ in range(500):
        if screen.source_ended:
            break
        await pilot.pause(0.01)
    await pilot.pause()


@pytest.mark.parametrize("name", ["caching", "early", "mid_run", "finished", "failed", "validated"])
def test_dashboard_snapshot(name, scripted_dir, snap_compare):
    events = getattr(script, name)()
    assert snap_compare(scripted_app(events), terminal_size=SIZE, run_before=all_events_shown)


def test_dashboard_snapshot_in_an_80x24_terminal(scripted_dir, snap_compare):
    """The size of many SSH sessions: no scrolling, the log hidden until `l`."""
    assert snap_compare(scripted_app(script.mid_run()), terminal_size=(80, 24), run_before=all_events_shown)
