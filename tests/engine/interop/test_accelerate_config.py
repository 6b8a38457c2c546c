"""accelerate config files and launch lines (engine/interop/accelerate_config.py, sdxl_tui/templates/accelerate/):
accelerate's own readers accept what we write, and launch configs the engine cannot train
with are refused before anything loads."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from engine.interop.accelerate_config import (
    Cluster,
    accelerate_config_text,
    accelerate_launch_line,
    write_accelerate_config,
)

REPO = Path(__file__).resolve().parents[3]


def _load(path: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    return load_config_from_file(str(path))


@pytest.mark.parametrize("precision", ["bf16", "fp16", "no"])
def test_written_config_is_read_by_accelerate_as_plain_ddp(tmp_path, precision):
    from accelerate.utils import DistributedType

    path = write_accelerate_config(tmp_path / "cfg" / "accelerate.yaml", 4, precision)
    config = _load(path)
    assert config.distributed_type == DistributedType.MULTI_GPU
    assert (config.num_processes, config.num_machines, config.machine_rank) == (4, 1, 0)
    assert str(config.mixed_precision) == precision
    assert not config.use_cpu and not config.deepspeed_config and not config.fsdp_config


def test_one_process_config_and_plain_command(tmp_path):
    from accelerate.utils import DistributedType

    config = _load(write_accelerate_config(tmp_path / "a.yaml", 1, "bf16"))
    assert config.distributed_type == DistributedType.NO
    assert accelerate_launch_line(tmp_path / "a.yaml", 1, "my run.toml") == "sdxl-tui train 'my run.toml'"


def test_launch_line_is_what_accelerate_launch_parses(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    line = accelerate_launch_line(tmp_path / "dir with space" / "acc.yaml", 8, "runs/run.toml")
    words = shlex.split(line)
    assert words[:2] == ["accelerate", "launch"]
    args = launch_command_parser().parse_args(words[2:])
    assert args.num_processes == 8 and args.module
    assert args.config_file == str(tmp_path / "dir with space" / "acc.yaml")
    assert args.training_script == "sdxl_tui" and args.training_script_args == ["train", "runs/run.toml"]


def test_several_machines(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    cluster = Cluster(num_machines=2, machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29555)
    config = _load(write_accelerate_config(tmp_path / "c.yaml", 16, "bf16", cluster))
    assert (config.num_machines, config.machine_rank, config.main_process_ip, config.main_process_port) == (
        2, 1, "10.0.0.1", 29555)
    args = launch_command_parser().parse_args(shlex.split(accelerate_launch_line("c.yaml", 16, cluster=cluster))[2:])
    assert (args.num_processes, args.num_machines, args.machine_rank, args.main_process_ip) == (16, 2, 1, "10.0.0.1")


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_processes=0), "at least 1"),
    (dict(num_processes=2, mixed_precision="fp8"), "mixed_precision"),
    (dict(num_processes=4, cluster=Cluster(num_machines=2)), "main_process_ip"),
    (dict(num_processes=3, cluster=Cluster(num_machines=2, main_process_ip="h")), "evenly"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        accelerate_config_text(**kwargs)


def test_templates_are_read_by_accelerate():
    from accelerate.utils import DistributedType

    ddp = _load(REPO / "sdxl_tui" / "templates" / "accelerate" / "multi_gpu.yaml")
    assert ddp.distributed_type == DistributedType.MULTI_GPU
    zero = _load(REPO / "sdxl_tui" / "templates" / "accelerate" / "deepspeed_zero2.yaml")
    assert zero.distributed_type == DistributedType.DEEPSPEED and zero.deepspeed_config["zero_stage"] == 2


def test_accelerate_config_module_does_not_import_torch():
    import subprocess

    code = "import sys, engine.interop.accelerate_config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("flag", ["ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP"])
def test_a_sharded_launch_is_refused_before_the_model_loads(tmp_path, tiny_model, demo_dataset, monkeypatch, flag):
    from train_helpers import tiny_config

    from engine.events.types import Failed, Phase
    from engine.train.run import run

    monkeypatch.setenv(flag, "true")
    events = []
    result = run(tiny_config(tmp_path, tiny_model, demo_dataset), events.append)
    assert not result.ok and result.exit_code == 78
    assert "multi_gpu.yaml" in result.error.hint
    assert not [e for e in events if isinstance(e, Phase)]  # nothing loaded
    assert isinstance(events[-1], Failed)
