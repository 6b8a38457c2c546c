"""RunModel folds engine events into the figures every view shows."""
from __future__ import annotations

import math

import dashboard_script as script
import pytest

from engine.events import types as ev
from sdxl_tui.run_model import (
    MEMORY_HISTORY,
    Downsampled,
    RunModel,
    final_lines,
    fold,
    format_bytes,
    format_duration,
    format_rate,
    sparkline,
)


def test_mid_run_view_has_every_figure():
    view = fold(script.mid_run())
    assert (view.step, view.total_steps, view.epoch, view.total_epochs) == (200, 400, 2, 4)
    assert view.phase.name == ev.TRAINING
    assert view.fraction == 0.5
    assert view.rate_text == "1.25 s/it"
    assert view.images_per_second == 3.2
    assert dict(view.lr) == {"unet": 1e-4, "text_encoder1": 5e-5}
    assert [saved.step for saved in view.checkpoints] == [100]
    assert view.latest_sample.path == script.SAMPLE_PATH
    assert view.warnings == ("bucket 1216x832 has 1 image: it repeats every step",)
    assert view.loss_steps == tuple(range(1, 201))
    assert view.loss_raw[-1] == pytest.approx(script.loss_at(200)[0])
    assert view.loss_smooth[-1] == pytest.approx(script.loss_at(200)[1])
    assert view.memory.device == "cuda:0" and len(view.memory_history) == MEMORY_HISTORY
    assert view.running and view.final is None


def test_phase_progress_is_tracked_inside_its_phase():
    events = script.preamble()[:4] + [ev.PhaseProgress(time=script.T0 + 8, name=ev.CACHING_LATENTS, done=31, total=100)]
    phase = fold(events).phase
    assert (phase.name, phase.done, phase.total, phase.label) == (ev.CACHING_LATENTS, 31, 100, "Caching latents")
    assert phase.fraction == pytest.approx(0.31)


@pytest.mark.parametrize("seconds_per_step, text", [
    (0.25, "4.00 it/s"), (0.999, "1.00 it/s"), (1.0, "1.00 s/it"), (3.5, "3.50 s/it"), (0.0, "–"),
])
def test_rate_switches_units_at_one_second_per_step_like_tqdm(seconds_per_step, text):
    assert format_rate(seconds_per_step) == text


def test_eta_counts_down_from_the_last_step_and_stops_at_zero():
    model = RunModel().apply_all([script.step_event(10)])
    step_time = script.step_event(10).time
    assert model.view(step_time).eta_seconds == pytest.approx(390 * 1.25)
    assert model.view(step_time + 100).eta_seconds == pytest.approx(390 * 1.25 - 100)
    assert model.view(step_time + 10_000).eta_seconds == 0.0


def test_finished_run_reports_what_it_wrote():
    view = fold(script.finished())
    assert view.final.status == "finished" and not view.running
    assert view.eta_seconds is None
    text = "\n".join(line for line, _ in final_lines(view))
    assert "Finished: 400 steps" in text
    assert "runs/scripted_run/lora.safetensors" in text
    assert "2 LoRA saves, 1 sample" in text


def test_stopped_run_says_it_stopped():
    finished = ev.Finished(time=script.T0 + 60, step=12, lora_path="out/lora.safetensors", stopped=True)
    events = [*script.early(), finished]
    view = fold(events)
    assert view.final.status == "stopped"
    assert final_lines(view)[0][0].startswith("■ Stopped on request at step 12")


def test_failed_run_says_why_and_what_to_do():
    view = fold(script.failed())
    assert view.final.status == "failed" and view.final.kind == "TrainingDiverged"
    text = "\n".join(line for line, _ in final_lines(view))
    assert "loss became NaN at step 239" in text
    assert "What to do: lower the learning rate" in text
    assert "Last good LoRA: runs/scripted_run/lora-000001.safetensors" in text
    assert view.log[-1].level == "error"


def test_non_finite_loss_is_shown_but_kept_out_of_the_chart():
    not_finite = ev.Step(time=1.0, step=2, total_steps=10, loss=math.nan, smoothed_loss=math.nan)
    model = RunModel().apply_all([script.step_event(1), not_finite])
    view = model.view()
    assert math.isnan(view.loss)
    assert view.loss_steps == (1,)


def test_missing_smoothed_loss_is_averaged_here():
    steps = [ev.Step(step=i, total_steps=10, loss=float(i)) for i in range(1, 4)]
    view = fold(steps)
    assert view.smoothed_loss == pytest.approx(0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 3)


def test_cpu_memory_history_uses_rss():
    model = RunModel()
    for i in range(1, 201):
        model.apply(ev.Step(step=i, total_steps=200, loss=1.0, memory=ev.Memory(device="cpu", rss=i * 1000)))
    view = model.view()
    assert view.memory_figure == 200_000
    assert view.memory_history == tuple(i * 1000 for i in range(81, 201))


def test_long_runs_keep_every_step_at_bounded_cost():
    series = Downsampled(1, max_points=256)
    for step in range(1, 100_001):
        series.add(step, float(step))
    steps, (values,) = series.snapshot()
    assert len(steps) <= 257
    assert steps[0] <= 512 and steps[-1] == 100_000
    # pairwise means keep the series' shape: the mean of 1..N stays the mean of the buckets
    assert sum(values) / len(values) == pytest.approx(50_000, rel=0.02)
    assert list(steps) == sorted(steps)


def test_log_is_bounded_but_counts_every_line():
    model = RunModel(max_log_lines=10)
    for i in range(25):
        model.apply(ev.Log(message=f"line {i}"))
    view = model.view()
    assert view.log_total == 25 and len(view.log) == 10 and view.log[-1].message == "line 24"


def test_formatting_helpers():
    assert format_duration(59) == "0:59"
    assert format_duration(3 * 3600 + 5) == "3:00:05"
    assert format_duration(None) == "–"
    assert format_bytes(3 * 10 ** 9) == "3.0 GB"  # one unit everywhere: decimal GB (engine.units)
    assert format_bytes(None) == "–"
    assert format_bytes(512) == "512 B"
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, 1.0], 8) == "▄▄"
    assert sparkline([], 8) == ""
