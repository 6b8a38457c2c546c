"""`sdxl-tui train` / `resume` / `demo` as a user runs them: real subprocesses, real signals."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import tiny_config

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


@pytest.mark.e2e
def test_train_writes_a_lora_and_set_takes_effect(tmp_path, tiny_model, demo_dataset):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2, output_dir="run-out")
    config_path = save_config(cfg, tmp_path / "run.toml")
    done = _cli("train", str(config_path), "--set", "network_dim=2", "--set", "saving.output_name=mine",
                "--set", "network_train_unet_only=true", "--set", "cache_text_encoder_outputs=true")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "run-out"  # relative output_dir: relative to the config file's folder
    lora = out / "mine.safetensors"
    assert lora.is_file()
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as handle:
        keys = list(handle.keys())
        downs = [handle.get_tensor(k) for k in keys if k.endswith("lora_down.weight")]
    assert downs and all(t.shape[0] == 2 for t in downs)  # --set network_dim=2
    assert not [k for k in keys if k.startswith("lora_te")]  # --set network_train_unet_only=true
    assert "step 2/2" in done.stdout  # plain lines when stdout is not a terminal
    assert _events(out)[-1]["type"] == "Finished"


def test_config_error_exits_78_before_loading_anything(tmp_path, tiny_model, demo_dataset):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset)
    config_path = save_config(cfg, tmp_path / "run.toml")
    done = _cli("train", str(config_path), "--set", "network_dimm=8", timeout=60)
    assert done.returncode == 78 and "network_dim" in done.stderr
    done = _cli("train", str(config_path), "--set", "sample_every_n_steps=1", timeout=60)
    assert done.returncode == 78 and "sample_prompts" in done.stdout + done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_sigint_stops_saves_and_exits_130_then_resume_finishes(tmp_path, tiny_model, demo_dataset):
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=200, output_dir="run-out",
                      network_train_unet_only=True, cache_text_encoder_outputs=True)
    config_path = save_config(cfg, tmp_path / "run.toml")
    out = tmp_path / "run-out"
    process = subprocess.Popen([sys.executable, "-m", "sdxl_tui", "train", str(config_path)], cwd=ROOT, env=_env(),
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
    assert process.returncode == 130, stderr[-3000:]
    finished = _events(out)[-1]
    assert finished["type"] == "Finished" and finished["stopped"]
    stopped_at = finished["step"]
    assert 0 < stopped_at < 200 and Path(finished["lora_path"]).is_file()
    assert (out / "state" / f"step-{stopped_at:08d}" / "COMPLETE").exists()

    resumed = _cli("resume", str(out), "--set", f"max_train_steps={stopped_at + 2}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    events = _events(out)
    started = [e for e in events if e["type"] == "RunStarted"]
    assert started[-1]["resumed_from_step"] == stopped_at
    assert events[-1]["type"] == "Finished" and events[-1]["step"] == stopped_at + 2
    assert (out / "lora.safetensors").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_builds_everything_and_trains(tmp_path):
    done = _cli("demo", "--dir", str(tmp_path / "demo"), "--steps", "3", timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    demo = tmp_path / "demo"
    assert (demo / "run.toml").is_file() and (demo / "tiny-sdxl" / "model_index.json").is_file()
    assert list((demo / "output").glob("*.safetensors"))
    # the written config replays with `train` (relative paths resolve against its folder)
    text = (demo / "run.toml").read_text()
    assert 'dataset_config = "dataset/dataset.toml"' in text and "max_train_steps = 3" in text


@pytest.mark.e2e
def test_train_accepts_an_sd_scripts_args_toml(tmp_path, tiny_model, demo_dataset):
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
    done = _cli("train", str(args))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sd-scripts args file" in done.stderr
    assert (tmp_path / "kohya-out" / "from_kohya.safetensors").is_file()
