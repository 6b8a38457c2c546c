"""`sdxl-tui train` / `resume` / `demo` as a user runs them: real subprocesses, real signals (the
sd-scripts args TOML is read by `train` in this process: what it reads, not the process, is checked)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from train_helpers import one_torch_thread, tiny_config  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.toml_file import save_config

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    # one thread: a tiny model on a shared CPU runs many times faster than with a thread pool
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdxl_tui", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _events(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def stopped_and_resumed(tmp_path_factory, tiny_model, demo_dataset) -> SimpleNamespace:
    """One `train` with `--set` options, stopped by SIGINT after its first step (a real process), then
    `resume`d two steps further (in this process: what it reads and writes is checked, the exit codes
    of a real `resume` are tests/engine/storage/test_atomic_saves.py's): the run both tests below look at."""
    tmp_path = tmp_path_factory.mktemp("cli_train")
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=200, output_dir="run-out")
    config_path = save_config(cfg, tmp_path / "run.toml")
    out = tmp_path / "run-out"  # relative output_dir: relative to the config file's folder
    process = subprocess.Popen([sys.executable, "-m", "sdxl_tui", "train", str(config_path), "--set", "network_dim=2",
                                "--set", "saving.output_name=mine", "--set", "network_train_unet_only=true",
                                "--set", "cache_text_encoder_outputs=true"], cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if (out / "events.jsonl").exists() and any(e["type"] == "Step" for e in _events(out)):
                break
            if process.poll() is not None:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    stopped = _events(out)
    stopped_at = stopped[-1].get("step", 0)
    resumed = _resume_here(out, f"max_train_steps={stopped_at + 2}") if stopped_at else None
    return SimpleNamespace(out=out, returncode=process.returncode, stdout=stdout, stderr=stderr, stopped=stopped,
                           resumed=resumed)


def _resume_here(out: Path, setting: str) -> SimpleNamespace:
    """`sdxl-tui resume OUT --set SETTING` in this process: (returncode, stdout, stderr)."""
    import contextlib
    import io

    from sdxl_tui.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["resume", str(out), "--set", setting])
    return SimpleNamespace(returncode=code, stdout=stdout.getvalue(), stderr=stderr.getvalue())


def _lora_keys_and_downs(lora: Path) -> tuple[list[str], list]:
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as handle:
        keys = list(handle.keys())
        return keys, [handle.get_tensor(k) for k in keys if k.endswith("lora_down.weight")]


@pytest.mark.e2e
def test_train_writes_a_lora_and_set_takes_effect(stopped_and_resumed):
    run = stopped_and_resumed
    assert run.returncode == 130, run.stderr[-3000:]
    finished = run.stopped[-1]
    assert finished["type"] == "Finished"
    step = finished["step"]
    lora = Path(finished["lora_path"])  # written by `train` itself, in the relative output_dir
    assert lora.name == f"mine-step{step:08d}.safetensors" and lora.is_file()  # --set saving.output_name
    assert lora.resolve().parent == run.out.resolve()
    for written in (lora, run.out / "mine.safetensors"):  # and `resume` keeps the options the run was set to
        keys, downs = _lora_keys_and_downs(written)
        assert downs and all(t.shape[0] == 2 for t in downs)  # --set network_dim=2
        assert not [k for k in keys if k.startswith("lora_te")]  # --set network_train_unet_only=true
    assert f"step {step}/200" in run.stdout  # plain lines when stdout is not a terminal
    assert f"step {step + 2}/{step + 2}" in run.resumed.stdout


def test_config_error_exits_78_before_loading_anything(tmp_path, tiny_model, demo_dataset, capsys):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset)
    config_path = save_config(cfg, tmp_path / "run.toml")
    done = _cli("train", str(config_path), "--set", "network_dimm=8", timeout=60)  # the exit code of a process
    assert done.returncode == 78 and "network_dim" in done.stderr
    from sdxl_tui.cli import main

    capsys.readouterr()
    code = main(["train", str(config_path), "--set", "sample_every_n_steps=1"])  # a rule: the same door, here
    said = capsys.readouterr()
    assert code == 78 and "sample_prompts" in said.out + said.err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_sigint_stops_saves_and_exits_130_then_resume_finishes(stopped_and_resumed):
    run, out = stopped_and_resumed, stopped_and_resumed.out
    assert run.returncode == 130, run.stderr[-3000:]
    finished = run.stopped[-1]
    assert finished["type"] == "Finished" and finished["stopped"]
    stopped_at = finished["step"]
    assert 0 < stopped_at < 200 and Path(finished["lora_path"]).is_file()
    assert (out / "state" / f"step-{stopped_at:08d}" / "COMPLETE").exists()
    from safetensors.torch import load_file

    from engine.outputs import checkpoint

    assert load_file(finished["lora_path"])  # what the stop saved loads back
    assert checkpoint.load_state(out / "state" / f"step-{stopped_at:08d}").optimizer["state"]

    resumed = run.resumed
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = _events(out)
    started = [e for e in events if e["type"] == "RunStarted"]
    assert started[-1]["resumed_from_step"] == stopped_at
    assert events[-1]["type"] == "Finished" and events[-1]["step"] == stopped_at + 2
    assert (out / "mine.safetensors").is_file()


# `sdxl-tui demo` (model, dataset, run.toml written, then trained): tests/cli/test_wheel.py runs it
# from the installed wheel and checks what it writes.


@pytest.mark.e2e
def test_train_accepts_an_sd_scripts_args_toml(tmp_path, tiny_model, demo_dataset, capsys):
    args = tmp_path / "kohya_args.toml"
    args.write_text(f"""
[model_arguments]
pretrained_model_name_or_path = "{tiny_model.diffusers_dir}"
[dataset_arguments]
dataset_config = "{demo_dataset.dataset_toml}"
[training_arguments]
output_dir = "{tmp_path / 'kohya-out'}"
output_name = "from_kohya"
max_train_steps = 1
mixed_precision = "no"
optimizer_type = "AdamW"
[network_arguments]
network_module = "networks.lora"
network_dim = 2
network_alpha = 1
network_train_unet_only = true
""")
    from sdxl_tui.cli import main

    capsys.readouterr()
    code = main(["train", str(args)])
    stderr = capsys.readouterr().err
    assert code == 0, stderr[-3000:]
    assert "sd-scripts args file" in stderr
    assert (tmp_path / "kohya-out" / "from_kohya.safetensors").is_file()
