"""events.jsonl lines from a newer sdxl-tui still read (engine/events/types.py): unknown fields
are ignored, an unknown event type becomes a debug Log; RunStarted carries the versions."""
from __future__ import annotations

import json

from engine.events import types as ev
from engine.events.follow import parse_line
from engine.versions import PACKAGES, library_versions


def test_a_line_with_unknown_fields_is_kept():
    line = json.dumps({"type": "Step", "time": 5.0, "step": 7, "loss": 0.25, "grad_norm": 1.5,
                       "memory": {"device": "cuda:0", "allocated": 10, "fragmentation": 0.1}})
    event = parse_line(line.encode())
    assert isinstance(event, ev.Step) and event.step == 7 and event.loss == 0.25
    assert event.memory.allocated == 10 and event.memory.device == "cuda:0"


def test_an_unknown_event_type_becomes_a_debug_log():
    event = parse_line(b'{"type": "GradientHistogram", "time": 3.0, "bins": [1, 2]}')
    assert isinstance(event, ev.Log) and event.level == "debug" and "GradientHistogram" in event.message
    assert event.time == 3.0
    assert parse_line(b"[1, 2]") is None and parse_line(b"not json") is None


def test_run_started_records_the_versions_and_round_trips():
    versions = library_versions()
    assert set(PACKAGES) <= versions.keys() and versions["torch"].startswith("2.")
    started = ev.RunStarted(time=1.0, total_steps=3, versions=versions)
    assert ev.event_from_json(started.to_json()) == started


def test_phase_progress_round_trips_rate_and_eta():
    progress = ev.PhaseProgress(time=2.0, name=ev.CACHING_LATENTS, done=3, total=10, unit="images",
                                rate=1.5, eta_seconds=4.67)
    assert ev.event_from_json(progress.to_json()) == progress
