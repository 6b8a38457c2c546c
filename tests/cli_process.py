"""A real `sdxl-tui` process for the signal, kill -9 and disk tests: start it, watch its
events.jsonl, send it signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[1]


def sdxl_tui_command() -> list[str]:
    """The installed `sdxl-tui` script next to this Python, as a user runs it."""
    script = Path(sys.executable).parent / "sdxl-tui"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sdxl_tui"]


def cli_env(**extra: str) -> dict:
    # one thread: a tiny model on a shared CPU runs many times faster than with a thread pool
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def read_events(output_dir: Path) -> list[dict]:
    path = Path(output_dir) / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return out


@dataclass
class CliProcess:
    process: subprocess.Popen
    output_dir: Path

    @classmethod
    def start(cls, args: list[str], output_dir: Path, **env: str) -> "CliProcess":
        process = subprocess.Popen([*sdxl_tui_command(), *args], cwd=ROOT, env=cli_env(**env),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)  # our signals only, not the test runner's group
        return cls(process, Path(output_dir))

    def events(self) -> list[dict]:
        return read_events(self.output_dir)

    def wait_for(self, condition: Callable[[], bool], timeout: float = 240, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                raise AssertionError(f"sdxl-tui ended ({self.process.returncode}) before {what}: {err[-3000:]}")
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"timed out waiting for {what}")

    def wait_for_step(self, step: int = 1, timeout: float = 240) -> None:
        self.wait_for(lambda: any(e["type"] == "Step" and e["step"] >= step for e in self.events()), timeout,
                      f"step {step}")

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def staging_dirs(self) -> list[Path]:
        root = self.output_dir / "state"
        return sorted(root.glob(".step-*.tmp")) if root.is_dir() else []


def last(events: list[dict], kind: str) -> Optional[dict]:
    found = [e for e in events if e["type"] == kind]
    return found[-1] if found else None
