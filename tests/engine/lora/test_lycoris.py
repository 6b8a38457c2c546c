"""LyCORIS through the lycoris-lora package: each algo builds on the SDXL-topology model, its
file has sd-scripts' module names and LyCORIS' tensor names, the library's own loader reads it
back and merges it into the same weights our trained network applies, `inspect` recognises it,
and configs that cannot work are refused before anything loads."""
from __future__ import annotations

import copy
import logging
import types

import pytest
import torch
from train_helpers import one_torch_thread  # noqa: F401  (autouse: a tiny UNet's forward is slower on a thread pool)

pytest.importorskip("lycoris")

from engine.config.learning_sections import NetworkSection  # noqa: E402
from engine.config.schema import RunConfig  # noqa: E402
from engine.lora.lycoris_adapter import create_lycoris_network, lycoris_module_names  # noqa: E402

ALGOS = {
    "loha": ["algo=loha"],
    "lokr": ["algo=lokr", "factor=4", "decompose_both=true", "use_tucker=true", "use_scalar=true"],
    "ia3": ["algo=ia3"],
    "full": ["algo=full"],
    "dora": ["algo=locon", "dora_wd=true", "conv_dim=2", "conv_alpha=1"],
}
EXPECTED_KEY = {"loha": "hada_w1_a", "lokr": "lokr_w1", "ia3": "on_input", "full": "diff", "dora": "dora_scale"}


@pytest.fixture(scope="module")
def _built_model():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from engine.demo.tiny_model import text_encoder_config, unet_config

    torch.manual_seed(0)
    return types.SimpleNamespace(
        unet=UNet2DConditionModel(**unet_config()),
        text_encoder1=CLIPTextModel(text_encoder_config(32, 12, 4, "quick_gelu", 32, 100, 99)),
        text_encoder2=CLIPTextModelWithProjection(text_encoder_config(48, 10, 4, "gelu", 40, 100, 0)))


@pytest.fixture()
def small_model(_built_model):
    """A fresh copy for each test (the tests wrap its layers); building it once saves its random init."""
    return copy.deepcopy(_built_model)


def _unet_out(unet, seed=3):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    x = torch.randn(1, cfg.in_channels, 16, 16, generator=g)
    hidden = torch.randn(1, 5, cfg.cross_attention_dim, generator=g)
    added = {"text_embeds": torch.randn(1, cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim,
                                        generator=g),
             "time_ids": torch.randn(1, 6, generator=g)}
    with torch.no_grad():
        return unet(x, torch.tensor([500]), encoder_hidden_states=hidden, added_cond_kwargs=added).sample


@pytest.mark.parametrize("algo", list(ALGOS))
def test_library_loader_merges_our_file_into_the_weights_we_trained(algo, small_model, tmp_path):
    from lycoris.kohya import create_network_from_weights

    from engine.lora.file import load_lora, save_lora
    from engine.lora.inspection import inspect_lora

    logging.getLogger("LyCORIS").setLevel(logging.ERROR)
    base = copy.deepcopy(small_model)
    # alpha = dim: lycoris-lora 4.1.3's LoHa get_diff_weight (its merge path) applies alpha / dim twice
    # while its forward applies it once, so with alpha != dim the library's own merge disagrees with
    # what it trains; the file itself is the same either way.
    network = create_lycoris_network(small_model, NetworkSection(network_module="lycoris.kohya", network_dim=4,
                                                                 network_alpha=4.0, network_args=ALGOS[algo]))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    network.eval()
    trained = _unet_out(small_model.unet)
    path = save_lora(tmp_path / "ly.safetensors", network, {"ss_network_module": "lycoris.kohya"}, "fp32")
    tensors, _ = load_lora(path)
    assert all(k.startswith(("lora_unet_", "lora_te1_", "lora_te2_")) for k in tensors)
    assert any(k.endswith("." + EXPECTED_KEY[algo]) for k in tensors)
    assert not any("down_blocks" in k or "up_blocks" in k for k in tensors)  # sd-scripts' SDXL names
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    report = inspect_lora(path)
    assert report.layout == "lycoris" and not report.broken
    assert all(v.target != "sd-scripts" or v.ok for v in report.verdicts)

    # the library's loaders read the module names of the model they are given (diffusers' here)
    to_diffusers = {v: k for k, v in lycoris_module_names(base.unet, [base.text_encoder1, base.text_encoder2]).items()}
    renamed = {f"{to_diffusers[k.split('.')[0]]}.{k.partition('.')[2]}": v for k, v in tensors.items()}
    network.remove()
    assert not torch.allclose(_unet_out(small_model.unet), trained, atol=1e-4, rtol=1e-4)  # the network did something

    # 1. sd-scripts' network_weights path: a network made from the same network_args, then the
    #    library's load_weights, then its merge_to
    from safetensors.torch import save_file

    save_file(renamed, str(tmp_path / "diffusers_names.safetensors"))
    twin = copy.deepcopy(base)
    rebuilt = create_lycoris_network(twin, NetworkSection(network_module="lycoris.kohya", network_dim=4,
                                                          network_alpha=4.0, network_args=ALGOS[algo]))
    rebuilt.remove()
    state = rebuilt.inner.load_weights(str(tmp_path / "diffusers_names.safetensors"))
    assert not state  # no missing and no unexpected key
    rebuilt.inner.merge_to([twin.text_encoder1, twin.text_encoder2], twin.unet, renamed, torch.float32, "cpu")
    assert torch.allclose(_unet_out(twin.unet), trained, atol=1e-4, rtol=1e-4)

    # 2. the library's create_network_from_weights (it infers each module from the tensors; in
    #    lycoris-lora 4.1.3 it fails for IA3 (a signature error) and guesses LoKr's factor from shapes)
    if algo in ("loha", "full", "dora"):
        loaded = create_network_from_weights(1.0, None, None, [base.text_encoder1, base.text_encoder2], base.unet,
                                             weights_sd=renamed)[0]
        loaded.merge_to([base.text_encoder1, base.text_encoder2], base.unet, renamed, torch.float32, "cpu")
        assert torch.allclose(_unet_out(base.unet), trained, atol=1e-4, rtol=1e-4)


def test_configs_that_cannot_work_are_refused_before_loading(monkeypatch):
    from engine.config import network_rules
    from engine.config.rules import check_rules

    def errors(**options):
        cfg = RunConfig().with_values(pretrained_model_name_or_path="x", **options)
        return [i.message for i in check_rules(cfg, None) if i.level == "error" and "dataset" not in i.message]

    assert errors(network_module="lycoris.kohya", network_args=["algo=loha", "factor=4"]) == []
    assert "not a lycoris.kohya option" in errors(network_module="lycoris.kohya",
                                                  network_args=["algo=loha", "foo=1"])[0]
    assert "'glora' is not supported" in errors(network_module="lycoris.kohya", network_args=["algo=glora"])[0]
    assert "does not read network_dropout" in errors(network_module="lycoris.kohya", network_dropout=0.1)[0]
    monkeypatch.setattr(network_rules, "lycoris_installed", lambda: False)
    message = errors(network_module="lycoris.kohya")[0]
    assert "sdxl-tui[lycoris]" in message
    from pydantic import ValidationError

    with pytest.raises(ValidationError):  # unknown modules never silently become plain LoRA
        RunConfig().with_values(network_module="networks.oft")


def test_scale_weight_norms_scales_lycoris_modules_through_the_library(small_model):
    """sd-scripts calls LyCORIS' own apply_max_norm_regularization for scale_weight_norms; so do we:
    every module's update norm ends at or below the limit, and the figures are reported."""
    from engine.lora.max_norm import apply_max_norm

    net_cfg = NetworkSection(network_module="lycoris.kohya", network_dim=4, network_alpha=4,
                             network_args=["algo=loha"], scale_weight_norms=0.01)
    network = create_lycoris_network(small_model, net_cfg)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(torch.randn_like(p))  # every update far above the limit
    result = apply_max_norm(network, 0.01).as_numbers()
    assert result["keys_scaled"] == len(network.lora_modules()) and result["max_norm"] > 0.01
    again = apply_max_norm(network, 0.01).as_numbers()  # now every update norm is at the limit
    assert again["max_norm"] <= 0.01 * 1.001, again
