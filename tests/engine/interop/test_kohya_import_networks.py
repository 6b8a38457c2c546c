"""Importing an sd-scripts args TOML that sets every network option of issue 13: each key is
mapped (none is "not used"), values land in the config, and the config passes the rules; an
unknown network_module is refused instead of becoming plain LoRA."""
from __future__ import annotations

import pytest

from engine.config.rules import check_rules
from engine.errors import ConfigError
from engine.interop.kohya_import import convert_kohya_args

BLOCKS = ",".join(["4"] * 23)
LORA_ARGS = [
    "conv_dim=4", "conv_alpha=1", "rank_dropout=0.1", "module_dropout=0.1", f"block_dims={BLOCKS}",
    f"block_alphas={BLOCKS}", f"conv_block_dims={BLOCKS}", f"conv_block_alphas={BLOCKS}",
    "down_lr_weight=cosine+0.5", "mid_lr_weight=1,1,1", "up_lr_weight=1,1,1,1,1,1,1,1,1",
    "block_lr_zero_threshold=0.1", "loraplus_lr_ratio=16", "loraplus_unet_lr_ratio=16",
    "loraplus_text_encoder_lr_ratio=4",
]
LYCORIS_ARGS = ["algo=lokr", "factor=8", "decompose_both=true", "use_tucker=true", "use_scalar=true",
                "dora_wd=true", "train_norm=true", "rank_dropout=0.1", "module_dropout=0.1", "dropout=0.1",
                "conv_dim=4", "conv_alpha=1", "preset=full"]


def _doc(**extra):
    doc = {"pretrained_model_name_or_path": "model.safetensors", "dataset_config": "dataset.toml",
           "network_module": "networks.lora", "network_dim": 8, "network_alpha": 4, "network_args": LORA_ARGS,
           "scale_weight_norms": 1.0, "network_weights": "start.safetensors", "dim_from_weights": True,
           "base_weights": ["base_a.safetensors", "base_b.safetensors"], "base_weights_multiplier": [1.0, 0.5],
           "network_train_text_encoder_only": False, "ema_decay": 0.999, "ema_update_every": 2}
    doc.update(extra)
    return doc


def _check(doc):
    result = convert_kohya_args(doc)
    notes = {n.key: n for n in result.notes}
    unused = {k: n.detail for k, n in notes.items() if k in doc and n.status == "not used"}
    assert not unused
    errors = [i.message for i in check_rules(result.config, None) if i.level == "error"]
    assert not errors
    return result.config


def test_every_networks_lora_option_is_mapped():
    cfg = _check(_doc())
    net = cfg.network
    assert net.network_args == LORA_ARGS and net.scale_weight_norms == 1.0 and net.dim_from_weights
    assert net.base_weights_multiplier == [1.0, 0.5] and cfg.training.ema_decay == 0.999
    assert net.lora_args.loraplus_text_encoder_ratio == 4.0 and len(net.lora_args.block_lr_weight) == 23


def test_every_lycoris_option_is_mapped():
    pytest.importorskip("lycoris")
    cfg = _check(_doc(network_module="lycoris.kohya", network_args=LYCORIS_ARGS, dim_from_weights=False,
                      scale_weight_norms=None, network_train_text_encoder_only=True))
    assert cfg.network.network_module == "lycoris.kohya" and cfg.network.network_train_text_encoder_only


def test_unknown_network_module_and_network_args_are_refused():
    with pytest.raises(ConfigError, match="network_module 'networks.oft' is not supported"):
        convert_kohya_args(_doc(network_module="networks.oft"))
    result = convert_kohya_args(_doc(network_args=["conv_dim=4", "not_a_key=1"]))
    errors = [i.message for i in check_rules(result.config, None) if i.level == "error"]
    assert any("network_args not_a_key" in e for e in errors)
