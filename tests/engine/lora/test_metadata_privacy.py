"""A shared LoRA file carries no local paths (base names, as sd-scripts stores them) and records
the versions that made it (engine/config/privacy.py, engine/lora/file.py, engine/versions.py)."""
from __future__ import annotations

import json

import tomlkit

from engine.config.privacy import base_name, without_local_paths
from engine.config.schema import RunConfig
from engine.lora.file import CONFIG_KEY, TrainingInfo, build_metadata
from engine.versions import VERSIONS_KEY

HOME = "/home/alice/private"


def _config(tmp_path) -> RunConfig:
    model = tmp_path / "models" / "sd_xl_base_1.0.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"x")
    return RunConfig().with_values(
        pretrained_model_name_or_path=str(model), vae=f"{HOME}/vae/sdxl_vae.safetensors",
        tokenizer_cache_dir=f"{HOME}/tokenizers", dataset_config=f"{HOME}/data/dataset.toml",
        output_dir=f"{HOME}/runs/cat", sample_prompts="~/prompts.txt", logging_dir=f"{HOME}/logs",
        output_name="cat_lora")


def test_metadata_holds_base_names_only(tmp_path):
    cfg = _config(tmp_path)
    info = TrainingInfo(steps=10, epoch=1, started_at=1.7e9, finished_at=1.7e9 + 60, session_id=1)
    metadata = build_metadata(cfg, training_info=info)
    for key, value in metadata.items():
        assert HOME not in value and str(tmp_path) not in value and "~/" not in value, key
    assert metadata["ss_sd_model_name"] == "sd_xl_base_1.0.safetensors"
    assert metadata["ss_vae_name"] == "sdxl_vae.safetensors"
    embedded = tomlkit.parse(metadata[CONFIG_KEY])
    assert embedded["model"]["pretrained_model_name_or_path"] == "sd_xl_base_1.0.safetensors"
    assert embedded["dataset"]["dataset_config"] == "dataset.toml"
    assert embedded["saving"]["output_dir"] == "cat" and embedded["saving"]["output_name"] == "cat_lora"
    assert embedded["sampling"]["sample_prompts"] == "prompts.txt"


def test_metadata_records_the_versions(tmp_path):
    info = TrainingInfo(steps=1, epoch=1, started_at=1.0, finished_at=2.0, session_id=1)
    versions = json.loads(build_metadata(RunConfig(), training_info=info)[VERSIONS_KEY])
    for name in ("sdxl-tui", "torch", "cuda", "diffusers", "transformers", "accelerate", "bitsandbytes"):
        assert versions[name], name


def test_hub_ids_and_plain_values_stay_whole():
    cfg = RunConfig().with_values(pretrained_model_name_or_path="stabilityai/stable-diffusion-xl-base-1.0",
                                  output_name="a/b", output_dir="relative/out")
    scrubbed = without_local_paths(cfg)
    assert scrubbed.model.pretrained_model_name_or_path == "stabilityai/stable-diffusion-xl-base-1.0"
    assert scrubbed.saving.output_name == "a/b" and scrubbed.saving.output_dir == "relative/out"
    assert base_name("C:\\Users\\alice\\model.safetensors") == "model.safetensors"
    assert base_name("/data/run/") == "run"
