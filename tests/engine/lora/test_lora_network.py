"""The LoRA network: sd-scripts' target choice on the real SDXL architecture (on `meta`),
the adapter maths, injection/removal, dtypes, parameter groups and network_weights loading."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine.errors import ConfigError
from engine.lora.network import LoRAModule, create_network


def _counts(network):
    return {part: len(modules) for part, modules in network.modules_by_part().items()}


def test_real_sdxl_has_sd_scripts_module_counts(meta_sdxl):
    m = meta_sdxl
    network = create_network(m.unet, m.text_encoder1, m.text_encoder2, dim=4, alpha=1)
    assert _counts(network) == {"unet": 722, "te1": 72, "te2": 192}
    names = set(network.modules_by_part()["unet"])
    for expected in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                     "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
                     "lora_unet_middle_block_1_proj_in",
                     "lora_unet_output_blocks_2_1_transformer_blocks_9_attn2_to_out_0",
                     "lora_unet_output_blocks_5_1_proj_out"):
        assert expected in names
    assert "lora_te2_text_model_encoder_layers_31_mlp_fc2" in network.modules_by_part()["te2"]
    assert "lora_te1_text_model_encoder_layers_11_self_attn_out_proj" in network.modules_by_part()["te1"]
    # No ResNet / sampler module without conv_dim.
    assert not any("in_layers" in n or "_op" in n or "skip_connection" in n for n in names)


def test_conv_lora_adds_resnet_and_sampler_convs(meta_sdxl):
    """sd-scripts adds ResnetBlock2D, Downsample2D, Upsample2D containers with conv_dim: in SDXL
    17 ResNet blocks x (in_layers_2, out_layers_3, emb_layers_1) + 11 skip_connection 1x1 convs
    (blocks whose in/out channels differ) + 2 down + 2 up samplers = 66 more modules."""
    m = meta_sdxl
    network = create_network(m.unet, m.text_encoder1, m.text_encoder2, dim=4, alpha=1, conv_dim=2, conv_alpha=1)
    unet = network.modules_by_part()["unet"]
    assert len(unet) == 722 + 66
    kinds = {k: sum(1 for n in unet if n.endswith(k))
             for k in ("_in_layers_2", "_out_layers_3", "_emb_layers_1", "_skip_connection", "_op", "_conv")}
    assert kinds == {"_in_layers_2": 17, "_out_layers_3": 17, "_emb_layers_1": 17,
                     "_skip_connection": 11, "_op": 2, "_conv": 2}
    # 3x3 convs take conv_dim with 4-D weights; the Linear and 1x1 conv in a ResNet take network_dim.
    conv = unet["lora_unet_input_blocks_4_0_in_layers_2"]
    assert tuple(conv.lora_down.weight.shape) == (2, 320, 3, 3)
    assert tuple(conv.lora_up.weight.shape) == (640, 2, 1, 1)
    assert unet["lora_unet_input_blocks_3_0_op"].lora_down.stride == (2, 2)
    assert unet["lora_unet_input_blocks_4_0_emb_layers_1"].lora_dim == 4
    assert tuple(unet["lora_unet_input_blocks_4_0_skip_connection"].lora_down.weight.shape) == (4, 320, 1, 1)
    assert "lora_unet_output_blocks_2_2_conv" in unet and "lora_unet_output_blocks_5_2_conv" in unet


def test_unet_only_has_no_text_encoder_modules(meta_sdxl):
    m = meta_sdxl
    network = create_network(m.unet, m.text_encoder1, m.text_encoder2, dim=4, alpha=1, train_unet_only=True)
    assert _counts(network) == {"unet": 722, "te1": 0, "te2": 0}
    assert all(k.startswith("lora_unet_") for k in network.kohya_state_dict())


def test_linear_adapter_adds_scaled_low_rank_update():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    lora = LoRAModule("lora_x", base, dim=3, alpha=1.5)
    nn.init.normal_(lora.lora_up.weight)
    x = torch.randn(2, 6)
    plain = base(x)
    lora.apply_to()
    lora.multiplier = 0.5
    expected = plain + 0.5 * (1.5 / 3) * (x @ lora.lora_down.weight.T @ lora.lora_up.weight.T)
    torch.testing.assert_close(base(x), expected)
    fused = nn.functional.linear(x, base.weight + 0.5 * lora.delta_weight(), base.bias)
    torch.testing.assert_close(base(x), fused)
    lora.remove()
    torch.testing.assert_close(base(x), plain)
    assert "forward" not in base.__dict__


def test_conv_adapter_matches_its_delta_weight():
    torch.manual_seed(0)
    base = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    lora = LoRAModule("lora_c", base, dim=2, alpha=4)
    nn.init.normal_(lora.lora_up.weight)
    x = torch.randn(1, 4, 8, 8)
    lora.apply_to()
    out = base(x)
    assert out.shape == (1, 6, 4, 4)
    fused = nn.functional.conv2d(x, base.weight + lora.delta_weight(), base.bias, stride=2, padding=1)
    torch.testing.assert_close(out, fused, atol=1e-5, rtol=1e-5)


def test_init_is_kaiming_down_zero_up_and_alpha_zero_means_rank():
    base = nn.Linear(64, 32)
    lora = LoRAModule("lora_x", base, dim=8, alpha=0)
    assert float(lora.alpha) == 8.0 and lora.scale == 1.0
    assert torch.count_nonzero(lora.lora_up.weight) == 0
    bound = 1 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) on fan_in 64
    assert lora.lora_down.weight.abs().max() <= bound and lora.lora_down.weight.std() > bound / 3


def test_bf16_base_keeps_fp32_adapter_and_output_dtype():
    torch.manual_seed(0)
    base = nn.Linear(8, 8).to(torch.bfloat16)
    lora = LoRAModule("lora_x", base, dim=2, alpha=2)
    nn.init.normal_(lora.lora_up.weight)
    lora.apply_to()
    y = base(torch.randn(3, 8, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lora.lora_up.weight.dtype == torch.float32 and lora.lora_up.weight.grad is not None
    assert lora.lora_down.weight.grad.dtype == torch.float32


def test_dropout_only_in_training():
    torch.manual_seed(0)
    base = nn.Linear(16, 16)
    lora = LoRAModule("lora_x", base, dim=8, alpha=8, dropout=0.5)
    nn.init.normal_(lora.lora_up.weight)
    lora.apply_to()
    x = torch.randn(4, 16)
    lora.eval()
    torch.testing.assert_close(base(x), base(x))
    lora.train()
    assert not torch.allclose(base(x), base(x))


def test_network_changes_outputs_and_leaves_base_state_dict_alone(small_parts):
    unet, te1, te2 = small_parts
    keys_before = list(unet.state_dict()) + list(te1.state_dict())
    ids = torch.randint(0, 98, (1, 77))
    plain = te1(ids).last_hidden_state
    network = create_network(unet, te1, te2, dim=4, alpha=2)
    network.apply()
    torch.testing.assert_close(te1(ids).last_hidden_state, plain)  # up starts at zero
    for module in network.lora_modules():
        nn.init.normal_(module.lora_up.weight, std=0.1)
    assert not torch.allclose(te1(ids).last_hidden_state, plain)
    assert list(unet.state_dict()) + list(te1.state_dict()) == keys_before
    network.remove()
    torch.testing.assert_close(te1(ids).last_hidden_state, plain)


def test_small_model_counts_follow_its_config(small_parts):
    """Counts follow the model: 10 Linear per transformer block (attn1/attn2 q/k/v/out, ff x2)
    plus proj_in/proj_out per Transformer2DModel; 6 per text-encoder layer."""
    unet, te1, te2 = small_parts
    blocks = sum(1 for _, m in unet.named_modules() if type(m).__name__ == "BasicTransformerBlock")
    containers = sum(1 for _, m in unet.named_modules() if type(m).__name__ == "Transformer2DModel")
    network = create_network(unet, te1, te2, dim=4, alpha=2)
    assert _counts(network) == {"unet": 10 * blocks + 2 * containers, "te1": 12 * 6, "te2": 10 * 6}


def test_param_groups_are_named_and_zero_rate_freezes(small_parts):
    unet, te1, te2 = small_parts
    network = create_network(unet, te1, te2, dim=4, alpha=2)
    groups = network.param_groups(1e-4, 5e-5, 0.0)
    assert [(g["name"], g["lr"]) for g in groups] == [("unet", 1e-4), ("te1", 5e-5)]
    te2_params = [p for m in network.modules_by_part()["te2"].values() for p in m.parameters()]
    assert te2_params and not any(p.requires_grad for p in te2_params)
    n_unet = sum(p.numel() for m in network.modules_by_part()["unet"].values() for p in m.parameters())
    assert sum(p.numel() for p in groups[0]["params"]) == n_unet
    unet_only = create_network(unet, te1, te2, dim=4, alpha=2, train_unet_only=True)
    assert [g["name"] for g in unet_only.param_groups(1e-4, 1e-4, 1e-4)] == ["unet"]


def test_kohya_state_dict_layout(small_parts):
    unet, te1, te2 = small_parts
    network = create_network(unet, te1, te2, dim=4, alpha=2)
    sd = network.kohya_state_dict()
    names = {k.split(".")[0] for k in sd}
    assert len(sd) == 3 * len(names)
    for name in names:
        assert sd[f"{name}.alpha"].shape == () and float(sd[f"{name}.alpha"]) == 2.0
        assert sd[f"{name}.lora_down.weight"].shape[0] == 4
        assert sd[f"{name}.lora_up.weight"].shape[1] == 4


def test_load_kohya_state_dict_round_trip_and_alpha_from_file(small_parts):
    unet, te1, te2 = small_parts
    source = create_network(unet, te1, te2, dim=4, alpha=2)
    for module in source.lora_modules():
        nn.init.normal_(module.lora_up.weight)
    sd = {k: v.clone() for k, v in source.kohya_state_dict().items()}
    some = next(k for k in sd if k.endswith(".alpha"))
    sd[some] = torch.tensor(1.0)
    target = create_network(unet, te1, te2, dim=4, alpha=2)
    report = target.load_kohya_state_dict(sd)
    assert report.loaded == len(sd) and report.alpha_from_file == [some.split(".")[0]]
    for key, value in target.kohya_state_dict().items():
        torch.testing.assert_close(value, sd[key].float())
    module = dict(target.named_modules())[some.split(".")[0]]
    assert module.scale == 1.0 / 4


def test_load_kohya_state_dict_mismatch_names_keys_and_ranks(small_parts):
    unet, te1, te2 = small_parts
    file_sd = create_network(unet, te1, te2, dim=8, alpha=8, train_unet_only=True).kohya_state_dict()
    target = create_network(unet, te1, te2, dim=4, alpha=2)
    with pytest.raises(ConfigError) as info:
        target.load_kohya_state_dict(file_sd)
    text = str(info.value)
    assert "rank found [8], configured [4]" in text
    assert "missing from the file" in text and "lora_te1_text_model_encoder_layers_0" in text
    assert "shape differs" in text and info.value.key == "network_weights"
    report = target.load_kohya_state_dict(file_sd, strict=False)
    assert report.loaded == sum(1 for k in file_sd if k.endswith(".alpha")) and report.missing


def test_under_autocast_the_adapter_runs_in_the_autocast_dtype_and_keeps_fp32_grads():
    torch.manual_seed(0)
    base = nn.Linear(8, 8).to(torch.bfloat16)
    lora = LoRAModule("lora_x", base, dim=2, alpha=2)
    nn.init.normal_(lora.lora_up.weight)
    lora.apply_to()
    x = torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = base(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert lora.lora_down.weight.grad.dtype == torch.float32 and lora.lora_down.weight.grad.abs().sum() > 0


def _aten_ops(fn) -> list[str]:
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Record():
        fn()
    return seen


@pytest.mark.parametrize("layer", [nn.Linear(16, 8), nn.Conv2d(4, 6, 3, padding=1)], ids=["linear", "conv"])
def test_adapter_forward_adds_no_op_that_does_no_work(layer):
    """Issue 17: the adapter runs once per wrapped layer per step, so beyond the base layer and
    its two low-rank products it adds exactly the scale and the sum (out + s·up(down(x))): no
    dtype casts on same-dtype inputs (they were 3 more dispatched ops per adapter)."""
    torch.manual_seed(0)
    x = torch.randn(2, 16) if isinstance(layer, nn.Linear) else torch.randn(2, 4, 5, 5)
    base = _aten_ops(lambda: layer(x))
    module = LoRAModule("lora_test", layer, dim=2, alpha=1.0)
    nn.init.normal_(module.lora_up.weight)
    module.apply_to()
    with torch.no_grad():
        expected = layer._conv_forward(x, layer.weight, layer.bias) if isinstance(layer, nn.Conv2d) \
            else nn.functional.linear(x, layer.weight, layer.bias)
        expected = expected + 0.5 * module.lora_up(module.lora_down(x))
    low_rank = _aten_ops(lambda: module.lora_up(module.lora_down(x)))
    adapted = _aten_ops(lambda: layer(x))
    extra = list(adapted)
    for op in base + low_rank:
        if op in extra:
            extra.remove(op)
    assert extra == ["mul", "add"], adapted
    torch.testing.assert_close(layer(x), expected)
