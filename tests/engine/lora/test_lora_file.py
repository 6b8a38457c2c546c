"""The LoRA file: sd-scripts' layout and metadata, its hashes, dtype, atomic save, and a
byte-identical save -> network_weights -> save round trip."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from torch import nn

from engine.config.schema import RunConfig
from engine.config.toml_file import loads_config
from engine.errors import ConfigError
from engine.lora.file import TrainingInfo, build_metadata, load_lora, save_lora
from engine.lora.network import create_network


@pytest.fixture()
def network_factory(small_parts):
    unet, te1, te2 = small_parts  # tests/engine/lora/conftest.py

    def make(**kwargs):
        return create_network(unet, te1, te2, **{"dim": 4, "alpha": 2.0, **kwargs})
    return make


def _info(**overrides) -> TrainingInfo:
    values = dict(steps=120, epoch=3, started_at=1_700_000_000.25, finished_at=1_700_000_600.5,
                  session_id=123456, num_train_images=40, num_reg_images=8, num_batches_per_epoch=40,
                  num_epochs=3, max_train_steps=120, resolution=(1024, 1024),
                  datasets=[{"is_dreambooth": True, "num_train_images": 40, "subsets": [{"image_dir": "cat"}]}],
                  tag_frequency={"cat": {"a cat": 10}},
                  bucket_info={"buckets": {"0": {"resolution": [1024, 1024], "count": 40}}},
                  dataset_dirs={"cat": {"n_repeats": 4, "img_count": 10}}, dataset_manifest_hash="abc123")
    values.update(overrides)
    return TrainingInfo(**values)


def _config() -> RunConfig:
    return RunConfig().with_values(network_dim=4, network_alpha=2.0, network_args=["conv_dim=2", "conv_alpha=1"],
                                   text_encoder_lr1=5e-5, text_encoder_lr2=2e-5, output_name="mycat",
                                   max_train_steps=120, min_snr_gamma=5.0)


def _nonzero(network):
    torch.manual_seed(1)
    for module in network.lora_modules():
        nn.init.normal_(module.lora_up.weight, std=0.05)
    return network


def test_metadata_is_sd_scripts_shaped_and_all_strings():
    cfg = _config()
    md = build_metadata(cfg, training_info=_info())
    assert all(isinstance(v, str) for v in md.values())
    assert md["ss_base_model_version"] == "sdxl_base_v1-0"
    assert md["ss_network_module"] == "networks.lora"
    assert md["ss_network_dim"] == "4" and md["ss_network_alpha"] == "2.0"
    assert json.loads(md["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1"}
    assert md["ss_text_encoder_lr"] == "[5e-05, 2e-05]" and md["ss_unet_lr"] == "None"
    assert md["ss_learning_rate"] == "0.0001" and md["ss_optimizer"] == "AdamW8bit"
    assert md["ss_steps"] == "120" and md["ss_epoch"] == "3" and md["ss_num_epochs"] == "3"
    assert md["ss_max_train_steps"] == "120" and md["ss_min_snr_gamma"] == "5.0"
    assert md["ss_mixed_precision"] == "bf16" and md["ss_v2"] == "False" and md["ss_cache_latents"] == "True"
    assert md["ss_training_started_at"] == "1700000000.25" and md["ss_session_id"] == "123456"
    assert md["ss_num_train_images"] == "40" and md["ss_num_reg_images"] == "8"
    assert md["ss_output_name"] == "mycat" and md["ss_resolution"] == "(1024, 1024)"
    for key in ("ss_datasets", "ss_tag_frequency", "ss_bucket_info", "ss_dataset_dirs"):
        json.loads(md[key])
    assert json.loads(md["ss_tag_frequency"]) == {"cat": {"a cat": 10}}
    assert md["modelspec.sai_model_spec"] == "1.0.1"
    assert md["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert md["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    assert md["modelspec.title"] == "mycat" and md["modelspec.resolution"] == "1024x1024"
    assert md["modelspec.date"] == "2023-11-14T22:23:20+00:00"
    assert loads_config(md["sdxl_tui.config"]) == cfg
    assert md["sdxl_tui.dataset_manifest_hash"] == "abc123"


def test_save_writes_kohya_keys_dtype_and_hashes(tmp_path, network_factory):
    network = _nonzero(network_factory())
    md = build_metadata(_config(), training_info=_info())
    path = save_lora(tmp_path / "a.safetensors", network, md, "fp32")
    tensors, meta = load_lora(path)
    assert set(tensors) == set(network.kohya_state_dict())
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    assert all(k.startswith(("lora_unet_", "lora_te1_", "lora_te2_")) for k in tensors)
    assert {k: meta[k] for k in md} == md
    # Model hash: SHA-256 of the tensor data, which does not depend on the header.
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + header:]).hexdigest()
    # Legacy hash: over the file as serialised with only ss_* metadata.
    from safetensors.torch import save

    ss_only = save(tensors, metadata={k: v for k, v in meta.items() if k.startswith("ss_")})
    assert len(ss_only) > 0x110000  # big enough that the legacy window holds tensor data
    assert meta["sshs_legacy_hash"] == hashlib.sha256(ss_only[0x100000:0x110000]).hexdigest()[:8]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_save_precision(tmp_path, network_factory, precision, dtype):
    network = _nonzero(network_factory(train_unet_only=True))
    path = save_lora(tmp_path / "b.safetensors", network, {}, precision)
    tensors, meta = load_lora(path)
    assert {t.dtype for t in tensors.values()} == {dtype}
    assert set(meta) == {"sshs_model_hash", "sshs_legacy_hash"}


def test_save_load_save_is_byte_identical(tmp_path, network_factory):
    md = build_metadata(_config(), training_info=_info())
    first = save_lora(tmp_path / "first.safetensors", _nonzero(network_factory(conv_dim=2, conv_alpha=1)), md, "fp16")
    tensors, meta = load_lora(first)
    again = network_factory(conv_dim=2, conv_alpha=1)  # fresh random init
    again.load_kohya_state_dict(tensors)
    second = save_lora(tmp_path / "second.safetensors", again, md, "fp16")
    assert first.read_bytes() == second.read_bytes()


def test_metadata_must_be_strings(tmp_path, network_factory):
    with pytest.raises(TypeError, match="ss_steps"):
        save_lora(tmp_path / "c.safetensors", network_factory(), {"ss_steps": 3}, "fp16")


def test_load_refuses_pickles_and_broken_files(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"not really")
    with pytest.raises(ConfigError, match="pickle"):
        load_lora(tmp_path / "x.ckpt")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(ConfigError, match="cannot read"):
        load_lora(tmp_path / "broken.safetensors")
    with pytest.raises(ConfigError, match="not found"):
        load_lora(tmp_path / "missing.safetensors")
