"""Real signals to a real `sdxl-tui train`: SIGINT / SIGTERM / SIGHUP finish the step, save the
LoRA and the state, exit 130 / 143 / 129; a second Ctrl-C during a save quits at once (previous
files intact) unless the save is nearly done, in which case it waits for it. Plus the handler
logic itself, in-process."""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from cli_process import CliProcess, last
from train_helpers import tiny_config

from engine.config.toml_file import save_config

SLOW_SAVE = "SDXL_TUI_TEST_SAVE_DELAY"


def _config(tmp_path, tiny_model, demo_dataset, **options) -> Path:
    # UNet-only with cached text outputs: a signal's handling does not depend on what trains
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1000, network_train_unet_only=True,
                      cache_text_encoder_outputs=True, **options)
    return save_config(cfg, tmp_path / "run.toml")


def _assert_loadable(lora: Path, state: Path) -> None:
    from safetensors.torch import load_file

    from engine.outputs import checkpoint

    assert load_file(str(lora)), lora
    loaded = checkpoint.load_state(state)
    assert loaded.lora and loaded.optimizer["state"]


def _assert_stopped_with_lora_and_state(run: CliProcess, out: Path, err: str) -> None:
    """The stop finished its step and saved the LoRA and a complete state, both loadable, nothing half-written."""
    _assert_saved_at_the_stop(run, out, run.events())
    assert "saving the LoRA and state" in err


def _assert_saved_at_the_stop(run: CliProcess, out: Path, events: list) -> None:
    finished = last(events, "Finished")
    assert finished and finished["stopped"], events[-3:]
    step = finished["step"]
    assert step >= 2
    lora = Path(finished["lora_path"])
    assert lora.name == f"lora-step{step:08d}.safetensors"
    state = out / "state" / f"step-{step:08d}"
    assert (state / "COMPLETE").exists()
    _assert_loadable(lora, state)
    assert not run.staging_dirs()


@pytest.mark.e2e
@pytest.mark.slow
def test_second_ctrl_c_early_in_a_save_quits_at_once_with_previous_files_intact(tmp_path, tiny_model,
                                                                                demo_dataset):
    # every part of a save takes 1.5 s, so the stop's save is still at its first part when the
    # second Ctrl-C comes (and, one part done, more than 2 s from its end: not "nearly done")
    config = _config(tmp_path, tiny_model, demo_dataset, save_every_n_steps=2, save_state=True)
    run = CliProcess.start(["train", str(config), "--plain"], tmp_path / "out", **{SLOW_SAVE: "1.5"})
    out = tmp_path / "out"
    run.wait_for(lambda: (out / "state" / "step-00000002" / "COMPLETE").exists(), what="the state of step 2")
    before = sorted(p.name for p in out.iterdir())
    run.signal(signal.SIGINT)
    run.wait_for(lambda: any(p.name != ".step-00000002.tmp" for p in run.staging_dirs()), what="the stop's save")
    second = time.monotonic()
    run.signal(signal.SIGINT)
    returncode, _, err = run.finish(timeout=30)
    waited = time.monotonic() - second
    print(f"second Ctrl-C early in the save: exit {returncode} after {waited:.2f} s")
    assert returncode == 130, err[-3000:]
    assert waited < 2.5, "it waited for a save that had barely begun"
    assert "previous files are intact" in err
    assert not run.staging_dirs(), "the abandoned save's folder is removed"
    assert not list(out.glob(".*.tmp"))
    states = sorted(p.name for p in (out / "state").iterdir())
    assert states == ["step-00000002"], states
    _assert_loadable(out / "lora-step00000002.safetensors", out / "state" / "step-00000002")
    assert set(before) <= {p.name for p in out.iterdir()}


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_saves_lora_and_state_and_exits_143_and_a_second_ctrl_c_late_in_the_save_waits_for_it(
        tmp_path, tiny_model, demo_dataset):
    """SIGTERM finishes the step, saves the LoRA and the state and exits 143; a Ctrl-C while that
    save is nearly done waits for it, and the first signal still decides the exit code.
    The other stop signals in a real process: SIGINT (130) in test_second_ctrl_c_early_in_a_save_...
    and tests/cli/test_cli_train.py (its stop, saved and resumed), SIGHUP (129) in
    test_terminal_hangup_in_a_real_pty_saves_and_exits_129 (the same saved-at-the-stop checks)."""
    config = _config(tmp_path, tiny_model, demo_dataset)
    # each part of a save takes 1 s: the Ctrl-C lands inside the last part
    run = CliProcess.start(["train", str(config), "--plain"], tmp_path / "out", **{SLOW_SAVE: "1"})
    run.wait_for_step(2)
    sent_at = time.monotonic()
    run.signal(signal.SIGTERM)
    # the optimizer part done (scheduler.pt is the next file): well over 90% of the bytes written
    run.wait_for(lambda: any((d / "scheduler.pt").exists() for d in run.staging_dirs()), what="a nearly done save")
    run.signal(signal.SIGINT)
    returncode, _, err = run.finish(timeout=60)
    print(f"SIGTERM: exit {returncode} {time.monotonic() - sent_at:.1f} s after the signal")
    assert returncode == 143, err[-3000:]
    assert "waiting for it to finish" in err
    _assert_stopped_with_lora_and_state(run, tmp_path / "out", err)


# ---------------------------------------------------------------- the handler, in-process


class _Exited(Exception):
    pass


def _handlers():
    from engine.control.run_control import RunControl
    from engine.control.signals import handle_stop_signals

    control = RunControl()
    said = []
    signals = handle_stop_signals(control, say=said.append)

    def exit_now(code):
        raise _Exited(code)

    signals.exit_now = exit_now
    return control, signals, said


def test_first_signal_requests_a_stop_with_its_exit_code():
    control, signals, said = _handlers()
    signals.handle(signal.SIGHUP)
    assert control.stop_requested and signals.exit_code == 129 and "SIGHUP" in control.stop_reason


def test_second_signal_outside_a_save_exits_at_once():
    control, signals, said = _handlers()
    signals.handle(signal.SIGTERM)
    with pytest.raises(_Exited) as exited:
        signals.handle(signal.SIGINT)
    assert exited.value.args == (143,)  # the first signal decides the code


def test_second_signal_waits_only_for_a_nearly_done_save(tmp_path):
    control, signals, said = _handlers()
    signals.handle(signal.SIGINT)
    temp = tmp_path / ".lora.safetensors.abc.tmp"
    temp.write_bytes(b"partial")
    control.saving.begin("the LoRA", {"lora": 100, "optimizer": 200})
    control.saving.writing(tmp_path / ".lora.safetensors.*.tmp")
    control.saving.part_done("lora")  # a third done, and the rest will take a while at this pace
    control.saving.started -= 60
    with pytest.raises(_Exited):
        signals.handle(signal.SIGINT)
    assert not temp.exists(), "the abandoned save's temporary file is removed"

    control, signals, said = _handlers()
    signals.handle(signal.SIGINT)
    control.saving.begin("the state", {"lora": 100, "optimizer": 880, "small files": 20})
    control.saving.part_done("lora")
    control.saving.part_done("optimizer")  # 98% done
    signals.handle(signal.SIGINT)  # returns: waits
    assert "98% done" in said[-1]
    with pytest.raises(_Exited):
        signals.handle(signal.SIGINT)  # a third one always quits


def test_handlers_are_installed_and_restored():
    from engine.control.run_control import RunControl
    from engine.control.signals import handle_stop_signals

    before = signal.getsignal(signal.SIGTERM)
    with handle_stop_signals(RunControl()) as signals:
        assert signal.getsignal(signal.SIGTERM) == signals.handle
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.e2e
@pytest.mark.slow
def test_terminal_hangup_in_a_real_pty_saves_and_exits_129(tmp_path, tiny_model, demo_dataset):
    """The SSH connection drops: sdxl-tui runs with the live panel on a pseudo-terminal that is
    its controlling terminal; closing the terminal's other end makes the kernel send SIGHUP,
    and every later write to the terminal fails (EIO). The run still saves and exits 129."""
    import fcntl
    import os
    import pty
    import subprocess
    import termios
    import threading

    from cli_process import cli_env, read_events, sdxl_tui_command

    config = _config(tmp_path, tiny_model, demo_dataset)
    out = tmp_path / "out"
    master, slave = pty.openpty()
    process = subprocess.Popen([*sdxl_tui_command(), "train", str(config)], stdin=slave, stdout=slave,
                               stderr=slave, env=cli_env(TERM="xterm-256color"), start_new_session=True,
                               preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    screen = bytearray()

    def drain():  # the terminal's reader, as sshd would be
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        run = CliProcess(process, out)
        run.wait_for_step(2)
        os.close(master)  # the connection is gone
        returncode = process.wait(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == 129, bytes(screen[-3000:]).decode(errors="replace")
    assert b"step" in bytes(screen), "the live panel was drawn on the terminal"
    _assert_saved_at_the_stop(run, out, read_events(out))
