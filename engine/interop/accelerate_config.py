"""accelerate config files and launch lines for training on N GPUs (one machine or several).

The wizard calls `write_accelerate_config(path, num_processes, mixed_precision)` and shows
`accelerate_launch_line(config_path, num_processes)`. The file is the YAML `accelerate config`
writes (plain DDP: `distributed_type: MULTI_GPU`), so `accelerate launch --config_file` reads
it as it reads its own. No torch import here: the wizard loads this at start.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engine.storage.atomic import atomic_write_text

MIXED_PRECISIONS = ("no", "fp16", "bf16")
DEFAULT_PORT = 29500


@dataclass(frozen=True)
class Cluster:
    """Several machines: every one runs the same launch line with its own `machine_rank`."""
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str = ""
    main_process_port: int = DEFAULT_PORT


def _check(num_processes: int, mixed_precision: str, cluster: Cluster) -> None:
    if num_processes < 1:
        raise ValueError(f"num_processes must be at least 1, not {num_processes}")
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, not {mixed_precision!r}")
    if cluster.num_machines < 1 or not 0 <= cluster.machine_rank < cluster.num_machines:
        raise ValueError(f"machine_rank {cluster.machine_rank} outside {cluster.num_machines} machines")
    if cluster.num_machines > 1 and not cluster.main_process_ip:
        raise ValueError("several machines need main_process_ip (the address of machine 0)")
    if num_processes % cluster.num_machines:
        raise ValueError(f"{num_processes} processes do not split evenly over {cluster.num_machines} machines")


def accelerate_config_text(num_processes: int, mixed_precision: str = "bf16",
                           cluster: Optional[Cluster] = None, gpu_ids: str = "all") -> str:
    """The YAML of a plain DDP accelerate config; `num_processes` counts GPUs on all machines;
    `gpu_ids` is accelerate's list of GPU indices ("0,1") or "all"."""
    cluster = cluster or Cluster()
    _check(num_processes, mixed_precision, cluster)
    distributed = "MULTI_GPU" if num_processes > 1 else "NO"
    lines = [
        "# accelerate config for sdxl-tui: plain data-parallel training (DDP), one process per GPU.",
        f"# Launch: {accelerate_launch_line('<this file>', num_processes, cluster=cluster)}",
        "compute_environment: LOCAL_MACHINE",
        "debug: false",
        f"distributed_type: '{distributed}'",  # quoted: YAML reads a bare NO / no as false
        "downcast_bf16: 'no'",
        "enable_cpu_affinity: false",
        f"gpu_ids: '{gpu_ids}'" if gpu_ids != "all" else "gpu_ids: all",
        f"machine_rank: {cluster.machine_rank}",
        "main_training_function: main",
        f"mixed_precision: '{mixed_precision}'",
        f"num_machines: {cluster.num_machines}",
        f"num_processes: {num_processes}",
        "rdzv_backend: static",
        "same_network: true",
        "use_cpu: false",
    ]
    if cluster.num_machines > 1:
        lines += [f"main_process_ip: {cluster.main_process_ip}", f"main_process_port: {cluster.main_process_port}"]
    return "\n".join(lines) + "\n"


def write_accelerate_config(path: str | Path, num_processes: int, mixed_precision: str = "bf16",
                            cluster: Optional[Cluster] = None, gpu_ids: str = "all") -> Path:
    """Write the config (atomically) and return its path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, accelerate_config_text(num_processes, mixed_precision, cluster, gpu_ids))
    return path


def accelerate_launch_line(config_path: str | Path, num_processes: int, run_config: str | Path = "run.toml",
                           cluster: Optional[Cluster] = None) -> str:
    """The command that trains `run_config` on `num_processes` GPUs with this config file.

    One process needs no launcher: the line is then `sdxl-tui train RUN_CONFIG`. With several
    machines, each runs the line with its own `--machine_rank`.
    """
    cluster = cluster or Cluster()
    if num_processes <= 1 and cluster.num_machines == 1:
        return f"sdxl-tui train {shlex.quote(str(run_config))}"
    parts = ["accelerate", "launch", "--config_file", str(config_path), "--num_processes", str(num_processes)]
    if cluster.num_machines > 1:
        parts += ["--num_machines", str(cluster.num_machines), "--machine_rank", str(cluster.machine_rank),
                  "--main_process_ip", cluster.main_process_ip, "--main_process_port", str(cluster.main_process_port)]
    parts += ["-m", "sdxl_tui", "train", str(run_config)]
    return " ".join(shlex.quote(part) if part != "<this file>" else part for part in parts)
