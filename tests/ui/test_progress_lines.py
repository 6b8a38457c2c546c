"""Progress on long work, headless: caching prints n of N, the rate and the ETA in plain mode
(throttled, the last line always), and model loading reports each part (sdxl_tui/console_view.py,
engine/data/progress.py Progress, engine/model/parts.py)."""
from __future__ import annotations

import io

from engine.data import progress as data_progress
from engine.events import types as ev
from sdxl_tui.console_view import PLAIN_PROGRESS_INTERVAL_S, PlainView, progress_line


def test_caching_progress_carries_rate_and_eta(monkeypatch):
    clock = iter([100.0, 102.0, 104.0, 106.0, 108.0])
    monkeypatch.setattr(data_progress.time, "time", lambda: next(clock))
    events: list = []
    progress = data_progress.Progress(events.append, ev.CACHING_LATENTS, 4)
    progress.start()
    for _ in range(4):
        progress.advance()
    updates = [e for e in events if isinstance(e, ev.PhaseProgress)]
    assert [u.done for u in updates] == [1, 2, 3, 4]
    assert updates[1].rate == 0.5 and updates[1].eta_seconds == 4.0  # 2 images in 4 s, 2 left
    assert updates[-1].eta_seconds == 0.0 and updates[-1].unit == "images"


def test_plain_mode_prints_caching_progress_throttled():
    now = [0.0]
    out = io.StringIO()
    view = PlainView(out, clock=lambda: now[0])
    view(ev.Phase(time=0.0, name=ev.CACHING_LATENTS, total=100))
    for done in range(1, 101):
        now[0] = done * 0.1  # 10 images/s for 10 s
        view(ev.PhaseProgress(time=now[0], name=ev.CACHING_LATENTS, done=done, total=100, unit="images",
                              rate=10.0, eta_seconds=(100 - done) / 10.0))
    lines = [line for line in out.getvalue().splitlines() if "/100 images" in line]
    assert lines[0] == "Caching latents: 1/100 images, 10.0/s, eta 0:10"
    assert lines[-1] == "Caching latents: 100/100 images, 10.0/s"
    # one line per interval (plus the first and the last), not one per image
    assert 1 + 10 / PLAIN_PROGRESS_INTERVAL_S <= len(lines) <= 3 + 10 / PLAIN_PROGRESS_INTERVAL_S


def test_progress_line_names_the_part_being_loaded():
    line = progress_line(ev.PhaseProgress(name=ev.LOADING_MODEL, done=2, total=7, unit="parts",
                                          detail="loading text encoder 1"))
    assert "2/7 parts" in line and "loading text encoder 1" in line


def test_model_loading_reports_each_part(tiny_model):
    from engine.config.schema import ModelSection
    from engine.model.load import load_sdxl

    heard: list = []
    load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file),
                           tokenizer_cache_dir=str(tiny_model.diffusers_dir)),
              lambda done, total, part: heard.append((done, total, part)))
    assert [h[2] for h in heard] == ["libraries (diffusers, transformers)", "tokenizers", "UNet", "VAE",
                                     "text encoder 1", "text encoder 2", "scheduler", ""]
    assert [h[0] for h in heard] == [0, *range(7)] and {h[1] for h in heard} == {6}
