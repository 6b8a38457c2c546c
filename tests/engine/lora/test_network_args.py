"""networks.lora network_args (sd-scripts names): parsing and refusal, 23 SDXL blocks in
sd-scripts' order, per-block ranks, block learning rates, LoRA+, rank/module dropout,
dim_from_weights and base_weights merging, each shown by its numerical effect."""
from __future__ import annotations

import pytest
import torch

from engine.config.network_args import block_lr_weight, parse_lora_args
from engine.errors import ConfigError
from engine.lora.block_weights import block_index
from engine.lora.network import LoRAModule, create_network, dims_from_state_dict


def _args(**kw):
    return parse_lora_args({k: str(v) for k, v in kw.items()}, 8, 4.0)


def test_unknown_and_malformed_keys_are_refused_by_name():
    with pytest.raises(ConfigError, match="network_args tpyo"):
        parse_lora_args({"tpyo": "1"}, 8, 4.0)
    with pytest.raises(ConfigError, match="block_dims: 22 values given, SDXL has 23"):
        _args(block_dims=",".join(["4"] * 22))
    with pytest.raises(ConfigError, match="down_lr_weight: 10 values"):
        _args(down_lr_weight=",".join(["1"] * 10))
    with pytest.raises(ConfigError, match="neither a comma list nor a preset"):
        _args(down_lr_weight="0.5")  # sd-scripts would log an error and train with 1.0 everywhere
    with pytest.raises(ConfigError, match="block_alphas: has no effect without block_dims"):
        _args(block_alphas=",".join(["1"] * 23))


def test_block_lr_weight_matches_sd_scripts_presets_and_fill():
    weights = block_lr_weight({"down_lr_weight": "linear", "mid_lr_weight": "2", "up_lr_weight": "0.5,0.25"})
    assert len(weights) == 23 and weights[0] == weights[22] == 1.0
    assert weights[1:10] == pytest.approx([i / 8 for i in range(9)])  # sd-scripts "linear", 9 SDXL blocks
    assert weights[10:13] == (2.0, 1.0, 1.0)  # mid: missing values filled with 1.0
    assert weights[13:22] == (0.5, 0.25) + (1.0,) * 7
    cut = block_lr_weight({"down_lr_weight": "cosine", "block_lr_zero_threshold": "0.5"})
    assert all(w == 0 or w > 0.5 for w in cut[1:10]) and 0 in cut[1:10]


def test_block_index_is_sd_scripts_sdxl_numbering(meta_sdxl):
    m = meta_sdxl
    network = create_network(m.unet, None, None, dim=1, alpha=1, conv_dim=1, train_unet_only=True)
    indices = {block_index(name) for name in network.modules_by_part()["unet"]}
    # SDXL LoRA targets live in input_blocks 1-8, middle_block 0-2, output_blocks 0-8 (+ conv blocks).
    assert indices == set(range(2, 10)) | {10, 11, 12} | set(range(13, 22))
    assert block_index("lora_unet_input_blocks_4_1_proj_in") == 5
    assert block_index("lora_unet_middle_block_1_proj_in") == 11
    assert block_index("lora_unet_output_blocks_8_0_in_layers_2") == 21


def test_block_dims_and_alphas_set_each_blocks_rank(meta_sdxl):
    m = meta_sdxl
    dims = [4] * 23
    dims[5], dims[11], dims[13] = 2, 0, 6  # input_blocks_4, middle_block_1 (off), output_blocks_0
    alphas = [1.0] * 23
    alphas[5] = 2.0
    args = _args(block_dims=",".join(map(str, dims)), block_alphas=",".join(map(str, alphas)))
    network = create_network(m.unet, None, None, dim=8, alpha=4.0, train_unet_only=True, args=args)
    modules = network.modules_by_part()["unet"]
    for name, module in modules.items():
        assert module.lora_dim == dims[block_index(name)]
        assert module.scale == pytest.approx(alphas[block_index(name)] / dims[block_index(name)])
    assert not any(name.startswith("lora_unet_middle_block_1") for name in modules)


def test_block_lr_weights_give_per_block_groups_and_drop_zero_blocks(small_parts):
    unet, te1, te2 = small_parts
    args = _args(down_lr_weight="zeros+0.5", mid_lr_weight="0,0,0", up_lr_weight="zeros+2")
    network = create_network(unet, te1, te2, dim=2, alpha=2, args=args)
    unet_names = list(network.modules_by_part()["unet"])
    assert unet_names and not any(block_index(n) in (10, 11, 12) for n in unet_names)  # mid weight 0: no module
    groups = network.param_groups(1e-3, 1e-4, 1e-4, block_lr_weight=args.block_lr_weight)
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name["te1"] == by_name["te2"] == 1e-4
    for name, lr in by_name.items():
        if name.startswith("unet_block"):
            index = int(name.removeprefix("unet_block"))
            assert lr == pytest.approx(1e-3 * (0.5 if index < 10 else 2.0))


def test_loraplus_puts_lora_up_in_a_faster_group(small_parts):
    unet, te1, te2 = small_parts
    args = _args(loraplus_lr_ratio=16, loraplus_text_encoder_lr_ratio=4)
    network = create_network(unet, te1, te2, dim=2, alpha=2, args=args)
    groups = {g["name"]: g for g in network.param_groups(1e-3, 1e-3, 1e-3, loraplus_unet_ratio=args.loraplus_unet_ratio,
                                                         loraplus_text_encoder_ratio=args.loraplus_text_encoder_ratio)}
    assert groups["unet plus"]["lr"] == pytest.approx(16e-3) and groups["unet"]["lr"] == 1e-3
    assert groups["te1 plus"]["lr"] == pytest.approx(4e-3)
    ups = {id(m.lora_up.weight) for m in network.lora_modules()}
    assert all(id(p) in ups for g in groups.values() if g["name"].endswith("plus") for p in g["params"])
    assert not any(id(p) in ups for g in groups.values() if not g["name"].endswith("plus") for p in g["params"])
    # the effect: one Adam step moves lora_up 16x as far (Adam's first step is lr * sign(grad))
    optimizer = torch.optim.Adam(list(groups.values()))
    module = next(iter(network.modules_by_part()["unet"].values()))
    module.lora_up.weight.grad = torch.ones_like(module.lora_up.weight)
    module.lora_down.weight.grad = torch.ones_like(module.lora_down.weight)
    up0, down0 = module.lora_up.weight.detach().clone(), module.lora_down.weight.detach().clone()
    optimizer.step()
    up_move = (module.lora_up.weight - up0).abs().max()
    down_move = (module.lora_down.weight - down0).abs().max()
    assert float(up_move / down_move) == pytest.approx(16.0, rel=1e-3)


def _module(rank_dropout=None, module_dropout=None):
    torch.manual_seed(1)
    layer = torch.nn.Linear(6, 5)
    module = LoRAModule("lora_unet_x", layer, dim=4, alpha=2.0, rank_dropout=rank_dropout,
                        module_dropout=module_dropout)
    torch.nn.init.normal_(module.lora_up.weight)
    module.apply_to()
    return layer, module


def test_rank_dropout_masks_ranks_and_rescales_like_sd_scripts():
    layer, module = _module(rank_dropout=0.5)
    x = torch.randn(3, 6)
    torch.manual_seed(5)
    got = layer(x)
    torch.manual_seed(5)
    mask = torch.rand(3, 4) > 0.5
    expected = torch.nn.functional.linear(x, layer.weight, layer.bias) + \
        module.lora_up((module.lora_down(x) * mask)) * (0.5 / (1 - 0.5))
    assert torch.allclose(got, expected, atol=1e-6)
    module.eval()
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias) + module.lora_up(module.lora_down(x)) * 0.5
    assert torch.allclose(layer(x), plain, atol=1e-6)  # no dropout at inference


def test_module_dropout_skips_the_whole_update_in_training():
    layer, module = _module(module_dropout=0.999)
    x = torch.randn(3, 6)
    base = torch.nn.functional.linear(x, layer.weight, layer.bias)
    skipped = sum(torch.equal(layer(x), base) for _ in range(20))
    assert skipped >= 19
    module.eval()
    assert not torch.equal(layer(x), base)


def test_dim_from_weights_and_base_weights_merge(small_parts):
    from engine.lora.merge import merge_state_dict

    unet, te1, te2 = small_parts
    source = create_network(unet, te1, te2, dim=3, alpha=1.5, conv_dim=2, conv_alpha=1.0)
    for p in source.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sd = source.kohya_state_dict()
    dims = dims_from_state_dict(sd)
    rebuilt = create_network(unet, te1, te2, dim=8, alpha=8, module_dims=dims)
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    rebuilt.load_kohya_state_dict(sd)  # strict: shapes and alphas all from the file

    # base_weights: merging the file at 0.5 equals applying the network with multiplier 0.5
    layer_name, module = next((n, m) for n, m in source.modules_by_part()["unet"].items() if "proj_in" in n)
    layer = module.org_module
    x = (torch.randn(2, layer.in_features) if isinstance(layer, torch.nn.Linear)
         else torch.randn(2, layer.in_channels, 4, 4))
    source.eval()
    source.set_multiplier(0.5)
    source.apply()
    with torch.no_grad():
        expected = layer(x)
    source.remove()
    merged = merge_state_dict(unet, te1, te2, sd, 0.5)
    assert merged == len(dims)
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-5)
