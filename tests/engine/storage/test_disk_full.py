"""A full disk: before each save the free space is checked (a real, small tmpfs and a
size-limited stand-in), and a write that still hits ENOSPC becomes the same DiskFullError. Either
way the run stops cleanly (exit 74) with the folder and the sizes named, and every file saved
before stays whole and loadable; the training data is never touched."""
from __future__ import annotations

import collections
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from cli_process import CliProcess, last
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.toml_file import save_config
from engine.events.types import Failed, Saved

# a full disk stops the save whatever trains: UNet-only with cached text outputs is cheapest
FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs of `size` MB mounted in tmp_path (root only); yields a function making one."""
    mounted = []

    def make(size_mb: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        mount = tmp_path / f"disk{len(mounted)}"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(mount)
        return mount

    yield make
    for mount in mounted:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_earlier_files_whole(out: Path) -> tuple[list[str], str]:
    """Every LoRA file loads, the newest complete state loads, no temporary leftovers."""
    from safetensors.torch import load_file

    from engine.outputs import checkpoint

    loras = sorted(p.name for p in out.glob("*.safetensors"))
    for name in loras:
        assert load_file(str(out / name)), name
    assert not list(out.glob(".*.tmp")), "a temporary LoRA file was left behind"
    assert not list((out / "state").glob(".step-*.tmp")), "an unfinished state folder was left behind"
    newest = checkpoint.latest_state(out)
    assert newest is not None
    assert checkpoint.load_state(newest).optimizer["state"]
    return loras, newest.name


@pytest.mark.slow
def test_real_small_disk_stops_the_cli_before_the_save_that_would_not_fit(tmp_path, tiny_model, demo_dataset,
                                                                         small_disk):
    disk = small_disk(16)
    # every step saves a LoRA (1.2 MB) and a state (3.8 MB), each checked with a 4 MB margin: the tmpfs
    # fills after a few steps
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=40, save_every_n_steps=1,
                      save_state=True, output_dir=str(disk / "out"), **FAST)
    config = save_config(cfg, tmp_path / "run.toml")
    data_before = _digest(demo_dataset.root)
    run = CliProcess.start(["train", str(config), "--plain"], disk / "out")
    returncode, stdout, stderr = run.finish(timeout=300)
    assert returncode == 74, stderr[-3000:]
    failed = last(run.events(), "Failed")
    assert failed and failed["kind"] == "DiskFullError"
    message = failed["message"]
    print(message)
    assert f"not enough disk space in {disk / 'out'}" in message and "it needs" in message and "is free" in message
    assert "sdxl-tui resume" in failed["hint"]
    assert "not enough disk space" in stdout + stderr
    loras, newest = _assert_earlier_files_whole(disk / "out")
    assert 2 <= len(loras) < 40
    assert _digest(demo_dataset.root) == data_before


@pytest.mark.e2e
def test_enospc_during_a_state_write_is_a_disk_full_error_and_nothing_half_written_stays(
        tmp_path, tiny_model, demo_dataset, small_disk, monkeypatch):
    import engine.storage.disk

    disk = small_disk(12)
    monkeypatch.setattr(engine.storage.disk, "ensure_space", lambda *args, **kwargs: None)  # let the write hit the wall
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=20, save_every_n_steps=1,
                      save_state=True, output_dir=str(disk / "out"), **FAST)
    run = train(cfg)
    assert run.result.exit_code == 74, run.result.error
    failed = run.of(Failed)[-1]
    assert failed.kind == "DiskFullError" and str(disk / "out") in failed.message, failed.message
    print(failed.message)
    loras, newest = _assert_earlier_files_whole(disk / "out")
    assert failed.last_good and Path(failed.last_good).name in loras


def _fake_usage(limit: dict):
    """shutil.disk_usage reporting `limit["free"]` bytes free once the test sets it."""
    import shutil

    real = shutil.disk_usage
    usage = collections.namedtuple("usage", "total used free")

    def disk_usage(path):
        found = real(path)
        free = limit.get("free", found.free)
        return usage(found.total, found.total - free, free)

    return disk_usage


@pytest.mark.e2e
def test_size_limited_stand_in_stops_before_the_save_with_sizes_named(tmp_path, tiny_model, demo_dataset,
                                                                     monkeypatch):
    import engine.storage.disk

    limit: dict = {}
    monkeypatch.setattr(engine.storage.disk.shutil, "disk_usage", _fake_usage(limit))

    def fill_the_disk(event):
        if isinstance(event, Saved) and event.kind == "state" and event.step == 2:
            limit["free"] = 3_000_000  # less than the 4 MB margin alone

    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=6, save_every_n_steps=2,
                      save_state=True, **FAST)
    run = train(cfg, on_event=fill_the_disk)
    assert run.result.exit_code == 74
    failed = run.of(Failed)[-1]
    out = Path(cfg.saving.output_dir)
    assert failed.message.startswith(f"not enough disk space in {out} to save the LoRA lora-step00000004")
    from safetensors.torch import load_file

    from engine.storage.disk import SAVE_MARGIN_BYTES
    from engine.units import human_bytes

    lora_bytes = sum(t.numel() * 4 for t in load_file(str(out / "lora-step00000002.safetensors")).values())
    needed = human_bytes(lora_bytes + SAVE_MARGIN_BYTES)
    assert f"it needs {needed}, 3.0 MB is free" in failed.message, failed.message
    assert failed.step == 4 and Path(failed.last_good).name == "lora-step00000002.safetensors"
    loras, newest = _assert_earlier_files_whole(out)
    assert loras == ["lora-step00000002.safetensors"] and newest == "step-00000002"


def test_space_check_counts_what_a_save_writes(tmp_path):
    import torch

    from engine.storage.disk import SAVE_MARGIN_BYTES, check_space, optimizer_state_bytes

    param = torch.nn.Parameter(torch.zeros(1000))
    optimizer = torch.optim.AdamW([param])
    param.grad = torch.ones(1000)
    optimizer.step()
    assert optimizer_state_bytes(optimizer) >= 2 * 4000  # two fp32 moments
    check = check_space(tmp_path / "not" / "yet" / "made", 10)
    assert check.needed == 10 + SAVE_MARGIN_BYTES and check.free > 0 and check.enough
