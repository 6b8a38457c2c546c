"""LoRA metadata options (issue 14): every metadata_* option becomes the modelspec.* key sd-scripts
writes (library/sai_model_spec.py), training_comment becomes ss_training_comment, no_metadata
keeps only sd-scripts' minimum keys plus modelspec.*, and `inspect` shows them."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
from safetensors import safe_open
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.rules import check_rules
from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.lora.file import CONFIG_KEY, TrainingInfo, build_metadata
from engine.lora.inspection import format_report, inspect_lora
from engine.outputs.metadata import SS_METADATA_MINIMUM_KEYS, apply_saving_options, thumbnail_data_url

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)
OPTIONS = dict(metadata_title="My LoRA", metadata_author="Ada", metadata_description="a test",
               metadata_license="CC-BY-4.0", metadata_tags="demo,shapes", metadata_usage_hint="say 'shapes'",
               metadata_merged_from="a,b", metadata_trigger_phrase="shapes style", metadata_preprocessor="none")


def _base_metadata(cfg: RunConfig) -> dict[str, str]:
    info = TrainingInfo(steps=3, epoch=1, started_at=1.7e9, finished_at=1.7e9 + 5, session_id=1)
    return build_metadata(cfg, training_info=info)


def _metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata())


def test_every_metadata_option_becomes_its_modelspec_key():
    cfg = RunConfig().with_values(output_name="out", **OPTIONS)
    meta = apply_saving_options(_base_metadata(cfg), cfg.saving)
    assert meta["modelspec.title"] == "My LoRA"
    for name, value in OPTIONS.items():
        if name != "metadata_title":
            assert meta["modelspec." + name.removeprefix("metadata_")] == value
    assert meta["ss_training_comment"] == "None"  # sd-scripts writes str(None) when unset


def test_title_defaults_to_output_name_and_training_comment_is_stored():
    cfg = RunConfig().with_values(output_name="out", training_comment="trained on shapes")
    meta = apply_saving_options(_base_metadata(cfg), cfg.saving)
    assert meta["modelspec.title"] == "out"
    assert meta["ss_training_comment"] == "trained on shapes"
    assert "modelspec.author" not in meta


def test_no_metadata_keeps_only_the_minimum_keys_and_modelspec():
    cfg = RunConfig().with_values(no_metadata=True, metadata_author="Ada")
    full = _base_metadata(cfg)
    meta = apply_saving_options(full, cfg.saving)
    assert set(meta) == {k for k in full if k in SS_METADATA_MINIMUM_KEYS or k.startswith("modelspec.")} | \
        {"modelspec.author"}
    assert CONFIG_KEY not in meta and "ss_seed" not in meta and "ss_training_comment" not in meta


def test_thumbnail_file_is_stored_as_a_data_url_and_a_missing_one_is_refused(tmp_path):
    image = tmp_path / "thumb.png"
    image.write_bytes(b"\x89PNG fake")
    assert thumbnail_data_url(str(image)) == "data:image/png;base64," + base64.b64encode(b"\x89PNG fake").decode()
    assert thumbnail_data_url("data:image/png;base64,AAAA") == "data:image/png;base64,AAAA"
    with pytest.raises(ConfigError, match="metadata_thumbnail"):
        thumbnail_data_url(str(tmp_path / "missing.png"))
    issues = check_rules(RunConfig().with_values(metadata_thumbnail=str(tmp_path / "missing.png"),
                                                 dataset_config="x.toml"))
    assert any(i.level == "error" and "metadata_thumbnail" in i.keys for i in issues)


@pytest.mark.e2e
def test_trained_lora_carries_the_metadata_options_and_inspect_shows_them(tmp_path, tiny_model, demo_dataset):
    thumb = sorted(Path(demo_dataset.image_dir).glob("*.png"))[0]
    run = train(tiny_config(tmp_path / "full", tiny_model, demo_dataset, max_train_steps=1, training_comment="hello",
                            metadata_thumbnail=str(thumb), **OPTIONS, **FAST))
    assert run.result.ok, run.result.error
    meta = _metadata_of(Path(run.result.lora_path))
    assert meta["modelspec.title"] == "My LoRA" and meta["modelspec.trigger_phrase"] == "shapes style"
    assert meta["modelspec.thumbnail"].startswith("data:image/png;base64,")
    assert meta["ss_training_comment"] == "hello"
    text = format_report(inspect_lora(run.result.lora_path))
    for line in ("modelspec.author = Ada", "modelspec.trigger_phrase = shapes style", "ss_training_comment = hello",
                 "modelspec.usage_hint = say 'shapes'", "modelspec.license = CC-BY-4.0"):
        assert line in text

    bare = train(tiny_config(tmp_path / "bare", tiny_model, demo_dataset, max_train_steps=1, no_metadata=True, **FAST))
    assert bare.result.ok, bare.result.error
    keys = set(_metadata_of(Path(bare.result.lora_path)))
    assert keys - {k for k in keys if k.startswith("modelspec.")} == set(SS_METADATA_MINIMUM_KEYS) | \
        {"sshs_model_hash", "sshs_legacy_hash"}
