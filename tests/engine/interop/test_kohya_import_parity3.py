"""sd-scripts args TOML import for the options of issue 14: the saving/metadata/start options map
1:1, no-op options carry an accurate note, and refused ones raise a ConfigError naming them."""
from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.interop.kohya_import import convert_kohya_args
from engine.interop.kohya_key_tables import HARMLESS as _HARMLESS

BASE = {"pretrained_model_name_or_path": "m", "dataset_config": "d.toml", "max_train_steps": 10}
MAPPED = {
    "save_last_n_steps": 20, "save_last_n_epochs_state": 2, "save_last_n_steps_state": 30,
    "save_state_on_train_end": True, "save_n_epoch_ratio": 3, "no_metadata": True, "training_comment": "hi",
    "metadata_title": "T", "metadata_author": "A", "metadata_description": "D", "metadata_license": "L",
    "metadata_tags": "a,b", "metadata_usage_hint": "U", "metadata_merged_from": "M",
    "metadata_trigger_phrase": "P", "metadata_preprocessor": "none", "initial_epoch": 2, "initial_step": 5,
    "skip_until_initial_step": True, "vae_batch_size": 8, "full_bf16": True, "fp8_base": True, "fp8_base_unet": True,
}


def _notes(result):
    return {n.key: n for n in result.notes}


def test_issue14_options_map_one_to_one():
    result = convert_kohya_args({**BASE, **MAPPED})
    notes, cfg = _notes(result), result.config
    for key, value in MAPPED.items():
        assert notes[key].status == "mapped", key
        section = next(s for s in ("saving", "training", "caching", "precision") if hasattr(getattr(cfg, s), key))
        assert getattr(getattr(cfg, section), key) == value


def test_no_implemented_option_keeps_a_not_used_note():
    assert not set(MAPPED) & set(_HARMLESS)
    for key in ("resume", "save_state_on_train_end", "training_comment", "no_metadata", "vae_batch_size"):
        assert key not in _HARMLESS


@pytest.mark.parametrize("key", ["xformers", "sdpa", "mem_eff_attn"])
def test_attention_options_say_sdpa_is_used(key):
    note = _notes(convert_kohya_args({**BASE, key: True}))[key]
    assert note.status == "not used" and "scaled_dot_product_attention" in note.detail


@pytest.mark.parametrize("key", ["persistent_data_loader_workers", "lowram", "highvram",
                                 "disable_mmap_load_safetensors", "skip_cache_check"])
def test_memory_options_are_noted_as_no_ops_with_a_reason(key):
    note = _notes(convert_kohya_args({**BASE, key: True}))[key]
    assert note.status == "not used" and len(note.detail) > 30


@pytest.mark.parametrize("key,value,words", [
    ("deepspeed", True, "plain DDP"), ("huggingface_repo_id", "me/lora", "huggingface-cli upload"),
    ("async_upload", True, "huggingface-cli"), ("cpu_offload_checkpointing", True, "cpu_offload_checkpointing"),
    ("dynamo_backend", "cudagraphs", "inductor"),
])
def test_refused_options_raise_a_config_error_naming_them(key, value, words):
    with pytest.raises(ConfigError) as caught:
        convert_kohya_args({**BASE, key: value})
    assert key in caught.value.message and words in caught.value.message and caught.value.exit_code == 78


def test_refused_options_left_off_and_inductor_pass():
    result = convert_kohya_args({**BASE, "deepspeed": False, "zero_stage": 2, "async_upload": False,
                                 "huggingface_repo_id": None, "dynamo_backend": "inductor"})
    notes = _notes(result)
    assert notes["deepspeed"].status == "not used" and "deepspeed" in notes["zero_stage"].detail
    assert notes["dynamo_backend"].status == "mapped" and "inductor" in notes["dynamo_backend"].detail
