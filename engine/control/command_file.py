"""Commands from another process (`sdxl-tui watch`) to a run, through a file in its output dir.

`send_command` appends one JSON line to `output_dir/control.jsonl` with a single O_APPEND
write, which POSIX keeps whole for lines this short, so concurrent senders never interleave.
The run's poller starts reading at the file's end when it starts: commands left over from an
earlier run in the same folder are not replayed.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Callable

from engine.control.run_control import SAMPLE_NOW, SAVE_NOW, RunControl

CONTROL_FILE = "control.jsonl"
STOP = "stop"
COMMANDS = (STOP, SAVE_NOW, SAMPLE_NOW)


def control_path(output_dir: str | Path) -> Path:
    """The command file a running training reads (in its output folder)."""
    return Path(output_dir) / CONTROL_FILE


def send_command(output_dir: str | Path, command: str, *, sender: str = "") -> Path:
    """Ask the run writing into `output_dir` to stop, save now or sample now."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; expected one of {', '.join(COMMANDS)}")
    path = control_path(output_dir)
    line = json.dumps({"command": command, "time": time.time(), "sender": sender or f"pid {os.getpid()}"})
    # private: the file steers a run, and nothing but sdxl-tui of this user needs to read it
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)
    return path


def apply_command(control: RunControl, command: str, sender: str = "") -> bool:
    """Forward one command to the RunControl; False for a command this version does not know."""
    if command == STOP:
        control.request_stop(f"stop requested via {CONTROL_FILE}" + (f" ({sender})" if sender else ""))
    elif command == SAVE_NOW:
        control.save_now()
    elif command == SAMPLE_NOW:
        control.sample_now()
    else:
        return False
    return True


class ControlFileReader:
    """Reads the complete command lines appended since the last call."""

    def __init__(self, output_dir: str | Path, *, from_start: bool = False) -> None:
        self.path = control_path(output_dir)
        self._offset = 0 if from_start else _size(self.path)
        self._partial = b""

    def read_new(self) -> list[dict]:
        """The command records (JSON objects) appended since the last call; a half-written last line waits for the
        next call, an unparsable line is skipped."""
        size = _size(self.path)
        if size < self._offset:  # replaced or truncated: read it from the top
            self._offset, self._partial = 0, b""
        if size == self._offset:
            return []
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(size - self._offset)
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        commands = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("command"), str):
                commands.append(record)
        return commands


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def start_control_poller(
    output_dir: str | Path, control: RunControl, interval: float = 0.5
) -> Callable[[], None]:
    """Forward commands from the control file to `control` until the returned stop() is called.

    Runs in a daemon thread, so a run that ends without calling stop() never hangs on it.
    stop() does one last read so a command sent just before the end is not lost.
    """
    reader = ControlFileReader(output_dir)
    finished = threading.Event()

    def forward() -> None:
        for record in reader.read_new():
            apply_command(control, record["command"], str(record.get("sender", "")))

    def loop() -> None:
        while not finished.wait(interval):
            try:
                forward()
            except OSError:
                pass  # the output dir may be briefly unavailable (network FS); try again

    thread = threading.Thread(target=loop, name="sdxl-tui-control-poller", daemon=True)
    thread.start()

    def stop() -> None:
        if finished.is_set():
            return
        finished.set()
        thread.join(timeout=max(1.0, 2 * interval))
        try:
            forward()
        except OSError:
            pass

    return stop
