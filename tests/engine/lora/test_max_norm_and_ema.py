"""scale_weight_norms (sd-scripts' max-norm formula) and the EMA of the adapter weights, on
small hand-made networks: the numbers each produces."""
from __future__ import annotations

import pytest
import torch

from engine.lora.max_norm import apply_max_norm
from engine.lora.network import LoRAModule, LoRANetwork
from engine.train.ema import LoraEma


def _network(scales=(3.0, 0.1)):
    torch.manual_seed(0)
    modules = []
    for index, scale in enumerate(scales):
        module = LoRAModule(f"lora_unet_m{index}", torch.nn.Linear(8, 6), dim=4, alpha=2.0)
        torch.nn.init.normal_(module.lora_up.weight, std=scale)
        modules.append(module)
    return LoRANetwork({"unet": modules})


def test_max_norm_scales_only_modules_over_the_limit_to_the_limit():
    network = _network()
    big, small = network.lora_modules()
    before = [m.delta_weight().norm().item() for m in (big, small)]
    assert before[0] > 1.0 > before[1]
    small_up = small.lora_up.weight.detach().clone()
    result = apply_max_norm(network, 1.0).as_numbers()
    after = [m.delta_weight().norm().item() for m in (big, small)]
    assert after[0] == pytest.approx(1.0, rel=1e-5)  # scaled exactly onto the max norm
    assert after[1] == pytest.approx(before[1], rel=1e-6) and torch.equal(small.lora_up.weight, small_up)
    assert result["keys_scaled"] == 1
    assert result["mean_norm"] == pytest.approx((1.0 + before[1]) / 2, rel=1e-5)
    assert result["max_norm"] == pytest.approx(1.0, rel=1e-5)
    # up and down are each scaled by sqrt(ratio), as sd-scripts does
    ratio = 1.0 / before[0]
    network2 = _network()
    big2 = next(network2.lora_modules())
    apply_max_norm(network2, 1.0)
    assert torch.allclose(big2.lora_down.weight, big.lora_down.weight)
    assert torch.allclose(big2.lora_down.weight, _network().lora_modules().__next__().lora_down.weight * ratio ** 0.5,
                          atol=1e-6)


def test_ema_follows_the_formula_and_swaps_weights_only_inside_the_block():
    network = _network()
    ema = LoraEma(network, decay=0.9, update_every=2)
    param = next(network.parameters())
    start = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    ema.update(1)  # not an update step (every 2)
    name = next(iter(ema.shadow))
    assert torch.equal(ema.shadow[name], start)
    ema.update(2)
    expected = 0.9 * start + 0.1 * (start + 1.0)
    assert torch.allclose(ema.shadow[name], expected, atol=1e-6)
    raw = param.detach().clone()
    with ema.swapped_in():
        assert torch.allclose(param, expected, atol=1e-6)
    assert torch.equal(param, raw)
    restored = LoraEma(_network(), decay=0.9)
    restored.load_state_dict(ema.state_dict())
    assert all(torch.equal(restored.shadow[k], ema.shadow[k]) for k in ema.shadow)
