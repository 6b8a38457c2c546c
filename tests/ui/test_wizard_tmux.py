"""The real `sdxl-tui` in a real terminal: tmux runs it, send-keys types, capture-pane reads.

Walks the start screen and the first two steps (model, dataset built from the demo image
folder, with the planner's findings on screen), and records the time to the first paint.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from sdxl_tui.screens.start import list_templates

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux is not installed (make system-deps installs it)")

SIZE = (120, 32)


class Tmux:
    def __init__(self, folder: Path, command: str, env: dict[str, str]) -> None:
        self.name = f"sdxl-tui-test-{uuid.uuid4().hex[:8]}"
        self.socket = f"sdxl-tui-{uuid.uuid4().hex[:8]}"  # a private tmux server
        # Textual sizes itself from COLUMNS/LINES when set (pytest sets them): drop them so the
        # app sees the pane's real size.
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        self.started = time.monotonic()
        self._tmux("new-session", "-d", "-s", self.name, "-x", str(SIZE[0]), "-y", str(SIZE[1]),
                   f"cd {shlex.quote(str(folder))} && env -u COLUMNS -u LINES {exports} {command}; sleep 30")

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=20)
        return done.stdout

    # A person types no faster than this; a loaded CI machine needs the slack too.
    PAUSE = 0.25

    def keys(self, *keys: str) -> None:
        for key in keys:
            self._tmux("send-keys", "-t", self.name, key)
            time.sleep(self.PAUSE)

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", self.name, "-l", text)
        time.sleep(self.PAUSE)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, seconds: float = 60, settle: float = 0.5) -> str:
        """Wait until `text` shows, then a moment more (focus moves after a screen paints)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                time.sleep(settle)
                return shown
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{self.screen()}")

    def close(self) -> None:
        self._tmux("kill-server")


def test_real_app_in_tmux_through_the_first_two_steps(tmp_path, demo_dataset):
    images = tmp_path / "images"
    shutil.copytree(demo_dataset.image_dir, images)
    model = tmp_path / "model"
    model.mkdir()
    (model / "model_index.json").write_text("{}")  # enough for the cheap format detection
    env = {"XDG_STATE_HOME": str(tmp_path / "state"), "TERM": "xterm-256color", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    tmux = Tmux(tmp_path, f"{shlex.quote(sys.executable)} -m sdxl_tui", env)
    try:
        tmux.wait_for("train an SDXL LoRA", 30, settle=0)
        first_paint = time.monotonic() - tmux.started
        print(f"first paint after {first_paint:.2f} s (tmux start included)")
        tmux.keys(*["Down"] * len(list_templates()), "Enter")
        tmux.wait_for("Step 1/7 · Model")
        tmux.type(str(model))
        tmux.keys("Tab")  # leaving the field detects the model
        tmux.wait_for("diffusers folder")
        tmux.keys("C-n")
        tmux.wait_for("Step 2/7 · Dataset")
        tmux.keys("Tab")
        tmux.type(str(images))
        tmux.wait_for("12 images × 1", 60)  # the folder is read (and checked for sd-scripts' layout) as typed
        tmux.keys("Tab", "C-e", "C-u")
        tmux.type("3")
        tmux.keys("Tab", "Tab", "Tab", "C-e", "C-u")
        tmux.type("64")
        shown = tmux.wait_for("12 images × 3", 60)
        assert "steps per epoch" in shown
        tmux.keys("C-n")
        tmux.wait_for("Step 3/7 · Network")
        tmux.keys("Escape")
        shown = tmux.wait_for("Step 2/7 · Dataset")
        tmux.keys("C-q")
        deadline = time.monotonic() + 10
        while "Step 2/7" in tmux.screen() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "Step 2/7" not in tmux.screen(), "Ctrl+Q did not quit"
    finally:
        tmux.close()
