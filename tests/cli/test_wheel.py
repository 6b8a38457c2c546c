"""A wheel that works: build it, install it into a fresh venv (its dependencies reused from this
environment, nothing downloaded), open the wizard's start screen (presets listed, from package
data) and run `sdxl-tui demo` with the installed script, far from the source tree (the one test of
`sdxl-tui demo`: what it builds and the run.toml it writes are checked here)."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

START_SCREEN = """
import asyncio, sys
from sdxl_tui.app import WizardApp
from sdxl_tui.gpu_info import CPU
from textual.widgets import OptionList

async def main():
    app = WizardApp(cursor_blink=False, gpu=CPU, save_dir=sys.argv[1])
    async with app.run_test() as pilot:
        await pilot.pause()
        options = app.screen.query_one("#start-options", OptionList)
        for index in range(options.option_count):
            option = options.get_option_at_index(index)
            if (option.id or "").startswith("template:"):
                print(option.id)

asyncio.run(main())
"""


def _run(args, **kwargs) -> subprocess.CompletedProcess:
    # no PYTHONPATH: the checkout (and the egg-info a build leaves in it) must not stand in for the wheel
    env = kwargs.pop("env", None) or {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, capture_output=True, text=True, env=env, **kwargs)


@pytest.mark.e2e
@pytest.mark.slow
def test_the_wheel_installs_lists_presets_and_runs_the_demo(tmp_path):
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                  "-w", str(tmp_path / "dist"), str(ROOT)], timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("sdxl_tui-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "sdxl_tui/templates/cpu-demo.toml" in names
    assert "engine/model/clip_vocab/bpe_simple_vocab_16e6.txt.gz" in names
    assert "sdxl_tui/py.typed" in names and any(n.endswith("licenses/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    core_requirements = metadata.split("Provides-Extra")[0]
    assert "License-Expression: Apache-2.0" in metadata and "Requires-Dist: peft" not in core_requirements

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120).returncode == 0
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                      "--force-reinstall", "-q", str(wheel)], timeout=300)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # the dependencies come from this environment, after the venv's own packages (so the wheel wins);
    # written after the install, or pip would take this checkout's editable install for the wheel
    (site / "zz_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", XDG_STATE_HOME=str(tmp_path / "state"))
    where = _run([str(python), "-c", "import sdxl_tui, engine; print(sdxl_tui.__file__, engine.__file__)"],
                 cwd=work, env=env)
    assert str(site) in where.stdout and str(ROOT) not in where.stdout, where.stdout + where.stderr

    version = _run([str(venv / "bin" / "sdxl-tui"), "--version"], cwd=work, env=env, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("sdxl-tui ")

    start = _run([str(python), "-c", START_SCREEN, str(tmp_path / "runs")], cwd=work, env=env, timeout=300)
    presets = [Path(line.removeprefix("template:")).name for line in start.stdout.split()]
    assert {"12gb.toml", "16gb.toml", "24gb.toml", "80gb.toml", "cpu-demo.toml"} <= set(presets), start.stderr[-3000:]

    demo = _run([str(venv / "bin" / "sdxl-tui"), "demo", "--dir", str(work / "demo"), "--steps", "2", "--plain"],
                cwd=work, env=env, timeout=900)
    assert demo.returncode == 0, (demo.stdout + demo.stderr)[-3000:]
    demo_dir = work / "demo"  # the demo builds everything it trains on
    assert (demo_dir / "run.toml").is_file() and (demo_dir / "tiny-sdxl" / "model_index.json").is_file()
    loras = list((demo_dir / "output").glob("*.safetensors"))
    assert loras and stat.S_IMODE(loras[0].stat().st_mode) == 0o666 & ~_umask()
    # the written config replays with `train` (relative paths resolve against its folder)
    text = (demo_dir / "run.toml").read_text()
    assert 'dataset_config = "dataset/dataset.toml"' in text and "max_train_steps = 2" in text


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
