"""The headless views: a Rich live panel on a terminal, plain lines anywhere else."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import dashboard_script as script
from rich.console import Console

from engine.events import types as ev
from sdxl_tui.console_view import ConsoleView, PlainView, console_panel, make_view
from sdxl_tui.run_model import fold

ROOT = Path(__file__).resolve().parents[2]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_view_picks_plain_lines_off_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    assert isinstance(make_view(io.StringIO()), PlainView)
    view = make_view(FakeTerminal())
    assert isinstance(view, ConsoleView)
    view.close()
    monkeypatch.setenv("TERM", "dumb")
    assert isinstance(make_view(FakeTerminal()), PlainView)


def test_plain_view_prints_one_line_per_step_and_the_outcome():
    out = io.StringIO()
    view = PlainView(out, clock=lambda: script.T0)
    for event in script.finished():
        view(event)
    lines = out.getvalue().splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    assert len(step_lines) == 400
    assert step_lines[-1].startswith("step 400/400  epoch 4/4  loss 0.1094 (avg 0.0951)")
    assert "1.25 s/it" in step_lines[-1] and "3.20 img/s" in step_lines[-1] and "mem 9.4 GB" in step_lines[-1]
    assert "Caching latents (100)" in lines
    assert "saved lora at step 100: lora-000001.safetensors" in lines
    assert "sample at step 200: samples/lora_000200_00.png" in lines
    assert "warning: bucket 1216x832 has 1 image: it repeats every step" in lines
    assert lines[-3].startswith("✔ Finished: 400 steps in 8:42")
    assert lines[-2] == "LoRA: runs/scripted_run/lora.safetensors"
    assert not any("\x1b" in line for line in lines)  # no escape codes in a log file


def test_plain_view_says_why_a_run_failed_and_what_to_do():
    out = io.StringIO()
    view = PlainView(out)
    for event in script.failed():
        view(event)
    tail = out.getvalue().splitlines()[-4:]
    assert tail[0] == "✖ Failed at step 239: loss became NaN at step 239"
    assert tail[1].startswith("What to do: lower the learning rate")
    assert tail[2] == "Last good LoRA: runs/scripted_run/lora-000001.safetensors"


def render(renderable, width=100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def test_console_panel_shows_phase_progress_eta_sparkline_rate_and_memory():
    events = script.mid_run()
    text = render(console_panel(fold(events, now=events[-1].time), 100))
    assert "200/400" in text and "ETA 4:04" in text  # counted down since the last step
    assert "epoch 2/4  1.25 s/it  3.20 images/s" in text
    assert "0.0963 (avg 0.0986)" in text
    assert any(char in text for char in "▁▂▃▄▅▆▇█")
    assert "9.1 GB allocated, 12.0 GB reserved, peak 10.6 GB of 24.0 GB (cuda:0)" in text
    caching = fold(script.preamble()[:50])
    assert "Caching latents" in render(console_panel(caching)) and "46/100" in render(console_panel(caching))


def test_console_view_ends_with_the_final_panel_and_summary():
    console = Console(file=FakeTerminal(), width=100, force_terminal=True, color_system=None)
    view = ConsoleView(console, clock=lambda: script.T0, refresh_per_second=20)
    for event in script.finished():
        view(event)
    out = console.file.getvalue()
    assert "saved lora at step 400: lora.safetensors" in out
    assert "✔ Finished: 400 steps in 8:42" in out
    assert "LoRA: runs/scripted_run/lora.safetensors" in out
    assert not view._started  # the live display was stopped, the cursor given back


def test_console_view_does_not_import_textual():
    code = ("import sys; from sdxl_tui.console_view import make_view; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'textual'], 'textual imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_log_level_error_lines_print_in_plain_view():
    out = io.StringIO()
    PlainView(out)(ev.Log(message="disk nearly full", level="error"))
    assert out.getvalue() == "disk nearly full\n"


def test_the_output_dir_is_named_before_the_run_reports_it():
    out = io.StringIO()
    view = make_view(out, output_dir=Path("/runs/mine"))
    view(ev.Failed(message="model not found: /nowhere", hint="check the path"))
    assert "Full record: /runs/mine/events.jsonl" in out.getvalue()
    out = io.StringIO()
    make_view(out)(ev.Failed(message="model not found: /nowhere"))
    assert "Full record: events.jsonl in the output dir" in out.getvalue()
