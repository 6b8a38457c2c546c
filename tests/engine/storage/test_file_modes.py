"""Output files follow the umask (0644 under 022), as a plain open() would; the control file
(control.jsonl) stays private (0600). engine/storage/atomic.py, engine/control/command_file.py."""
from __future__ import annotations

import os
import stat

import pytest
import torch

from engine.config.schema import RunConfig
from engine.config.toml_file import save_config
from engine.control.command_file import send_command
from engine.data.cache_files import write_cache
from engine.lora.file import save_lora
from engine.storage.atomic import atomic_write_bytes, current_umask


@pytest.fixture()
def umask():
    previous = os.umask(0o022)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_every_writer_follows_the_umask(tmp_path, umask):
    assert current_umask() == 0o022
    lora = save_lora(tmp_path / "a.safetensors", {"lora_unet_x.lora_down.weight": torch.ones(2, 2)}, {"k": "v"})
    config = save_config(RunConfig(), tmp_path / "config.toml")
    cache = tmp_path / "img.sdxl-tui-latents.safetensors"
    write_cache(cache, {"latents": torch.zeros(4, 2, 2)}, {"source": "x"})
    sample = atomic_write_bytes(tmp_path / "samples" / "s.png", b"\x89PNG")
    for path in (lora, config, cache, sample):
        assert _mode(path) == 0o644, path
    umask(0o077)
    assert _mode(atomic_write_bytes(tmp_path / "private.bin", b"x")) == 0o600
    umask(0o002)
    assert _mode(atomic_write_bytes(tmp_path / "group.bin", b"x")) == 0o664


def test_control_file_stays_private(tmp_path, umask):
    path = send_command(tmp_path, "stop")
    assert _mode(path) == 0o600


def test_explicit_mode_wins(tmp_path, umask):
    assert _mode(atomic_write_bytes(tmp_path / "secret", b"x", mode=0o600)) == 0o600
