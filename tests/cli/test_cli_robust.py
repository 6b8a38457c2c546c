"""A robust command line (sdxl_tui/cli.py): --version, --help with exit codes and environment
variables, the wizard without a terminal, Ctrl-C -> 130 in any command, `--set KEY=none`,
a stop signal while the model loads, and a Hub that cannot be reached."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.config.schema import RunConfig
from engine.config.toml_file import apply_sets, save_config
from engine.errors import ConfigError, ModelError

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def _cli(*args: str, stdin=subprocess.DEVNULL, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdxl_tui", *args], cwd=ROOT, env=_env(**env), capture_output=True,
                          text=True, timeout=120, stdin=stdin)


def test_version_names_ours_and_the_libraries():
    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("sdxl-tui ")
    for name in ("torch", "diffusers", "transformers", "accelerate", "bitsandbytes", "tensorboard"):
        assert name in done.stdout


def test_help_lists_exit_codes_and_environment():
    out = _cli("--help").stdout
    for text in ("exit codes:", "78 config error", "130", "143", "environment:", "HF_HUB_OFFLINE", "HF_HOME",
                 "CUDA_VISIBLE_DEVICES"):
        assert text in out, text


def test_help_imports_no_command_module_and_nothing_heavy():
    code = ("import sys\nfrom sdxl_tui.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    loaded = set(done.stderr.split())
    assert "sdxl_tui.cli" in loaded and "usage: sdxl-tui" in done.stdout
    assert [m for m in loaded if m.startswith("sdxl_tui.commands.")] == []  # the list comes from cli.COMMANDS
    heavy = {"torch", "diffusers", "transformers", "pydantic", "textual", "rich", "numpy", "tomlkit", "engine"}
    assert {m.split(".")[0] for m in loaded} & heavy == set()


def test_a_commands_help_lists_its_own_options():
    done = _cli("train", "--help")
    assert done.returncode == 0 and "--plain" in done.stdout and "--set KEY=VALUE" in done.stdout


def test_bare_command_without_a_terminal_exits_2():
    done = _cli()
    assert done.returncode == 2 and "needs a terminal" in done.stderr and "sdxl-tui train" in done.stderr


def test_set_none_unsets_an_optional_value():
    cfg = RunConfig().with_values(sample_every_n_steps=30, sample_prompts="p.txt", sample_every_n_epochs=1)
    off = apply_sets(cfg, ["sample_every_n_steps=none", "sample_every_n_epochs=None", "sample_prompts=none"])
    assert off.sampling.sample_every_n_steps is None and off.sampling.sample_every_n_epochs is None
    assert off.sampling.sample_prompts == ""
    assert apply_sets(cfg, ['output_name="none"']).saving.output_name == "none"  # quoted: the word itself
    with pytest.raises(ConfigError, match="always has a value"):
        apply_sets(cfg, ["network_dim=none"])


def test_ctrl_c_exits_130_in_watch(tmp_path):
    from engine.events import types as ev

    (tmp_path / "events.jsonl").write_text(ev.RunStarted(time=1.0, total_steps=10).to_json() + "\n")
    # SIGINT back to its default in the child: a disposition the test worker inherited or set
    # (an ignored SIGINT survives exec, and Python then installs no KeyboardInterrupt for it)
    # would otherwise decide the outcome instead of the watch command.
    process = subprocess.Popen([sys.executable, "-m", "sdxl_tui", "watch", str(tmp_path), "--plain"], cwd=ROOT,
                               env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().startswith("run:")  # replayed the file, now following it
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    assert "left the watch" in err


def test_an_unreachable_hub_fails_fast_naming_the_fixes(monkeypatch):
    from engine.model.hub_offline import check_model_before_loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    for proxy in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(ModelError, match="cannot be reached") as caught:
        check_model_before_loading("nobody-here/no-such-sdxl-model")
    assert "HF_HUB_OFFLINE" in caught.value.hint and "tokenizer_cache_dir" in caught.value.hint


def test_the_hub_probe_gives_up_when_the_network_hangs(monkeypatch):
    import socket

    from engine.model import source

    def hang(*args, **kwargs):
        time.sleep(5)
        raise OSError("timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    assert source.hub_reachable(timeout=0.5) is False


def test_a_stop_signal_before_training_ends_at_once():
    from engine.control.run_control import RunControl
    from engine.control.signals import StoppedBeforeTraining, handle_stop_signals

    control = RunControl()
    control.interruptible = True
    signals = handle_stop_signals(control)
    with pytest.raises(StoppedBeforeTraining) as caught:
        signals.handle(signal.SIGTERM)
    assert caught.value.exit_code == 143 and control.stop_requested


SLOW_LOAD = """
import sys, time
import engine.model.load as load
def slow(*args, **kwargs):
    time.sleep(300)  # a model load that would take minutes (a Hub retrying, a slow disk)
load.load_sdxl = slow
from sdxl_tui.cli import main
sys.exit(main(["train", sys.argv[1], "--plain"]))
"""


@pytest.mark.e2e
def test_sigterm_while_the_model_loads_ends_within_seconds(tmp_path, tiny_model, demo_dataset):
    from train_helpers import tiny_config

    out = tmp_path / "out"
    config = save_config(tiny_config(tmp_path, tiny_model, demo_dataset), tmp_path / "run.toml")
    process = subprocess.Popen([sys.executable, "-c", SLOW_LOAD, str(config)], cwd=ROOT, env=_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and process.poll() is None:
            events = (out / "events.jsonl").read_text() if (out / "events.jsonl").exists() else ""
            if '"loading_model"' in events:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)  # the load itself would take 300 s
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, stderr[-2000:]
    last = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert last["type"] == "Finished" and last["stopped"] and last["step"] == 0
    assert "nothing is trained yet" in stderr
