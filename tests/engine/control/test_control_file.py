"""The control file carries stop / save now / sample now from another process to a RunControl."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.control.command_file import ControlFileReader, control_path, send_command, start_control_poller
from engine.control.run_control import SAMPLE_NOW, SAVE_NOW, RunControl


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_commands_reach_the_run_control(tmp_path):
    control = RunControl()
    stop_poller = start_control_poller(tmp_path, control, interval=0.05)
    try:
        send_command(tmp_path, "save_now")
        send_command(tmp_path, "sample_now")
        assert wait_for(lambda: control._commands.qsize() == 2)
        assert control.pending_commands() == [SAVE_NOW, SAMPLE_NOW]
        assert not control.stop_requested
        send_command(tmp_path, "stop")
        assert wait_for(lambda: control.stop_requested)
        assert "control.jsonl" in control.stop_reason
    finally:
        stop_poller()


def test_commands_from_before_the_run_started_are_not_replayed(tmp_path):
    send_command(tmp_path, "stop")
    control = RunControl()
    stop_poller = start_control_poller(tmp_path, control, interval=0.05)
    time.sleep(0.2)
    stop_poller()
    assert not control.stop_requested


def test_a_command_sent_just_before_stop_is_still_delivered(tmp_path):
    control = RunControl()
    stop_poller = start_control_poller(tmp_path, control, interval=10.0)
    send_command(tmp_path, "save_now")
    stop_poller()
    assert control.pending_commands() == [SAVE_NOW]


def test_partial_and_garbage_lines_are_tolerated(tmp_path):
    reader = ControlFileReader(tmp_path)
    path = control_path(tmp_path)
    path.write_bytes(b'not json\n{"command": "stop"}\n{"command": "save')
    assert [r["command"] for r in reader.read_new()] == ["stop"]
    with open(path, "ab") as handle:
        handle.write(b'_now"}\n')
    assert [r["command"] for r in reader.read_new()] == ["save_now"]


def test_unknown_command_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown command"):
        send_command(tmp_path, "explode")
    assert not control_path(tmp_path).exists()


def test_send_from_another_process(tmp_path):
    control = RunControl()
    stop_poller = start_control_poller(tmp_path, control, interval=0.05)
    try:
        code = f"from engine.control.command_file import send_command; send_command({str(tmp_path)!r}, 'stop')"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(__file__).parents[3]))
        assert wait_for(lambda: control.stop_requested)
    finally:
        stop_poller()
