"""Every optimizer the config names is built and really updates weights; optimizer_args parse
to Python values and reach the optimizer."""
from __future__ import annotations

import pytest
import torch

from engine.errors import ConfigError
from engine.train.optimizers import build_optimizer, group_lrs, parse_optimizer_args, parse_value, uses_own_lr

ALL = ["AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion", "Lion8bit", "PagedLion8bit", "Adafactor", "SGD", "Prodigy"]


def test_values_parse_to_python_types():
    assert parse_value("True") is True and parse_value("false") is False
    assert parse_value("3") == 3 and parse_value("0.01") == 0.01 and parse_value("1e-3") == 1e-3
    assert parse_value("0.9,0.99") == (0.9, 0.99)
    assert parse_value("None") is None
    assert parse_value("cosine") == "cosine"
    assert parse_optimizer_args(["weight_decay=0.1", "betas=0.8,0.9"]) == {"weight_decay": 0.1, "betas": (0.8, 0.9)}


def test_malformed_argument_is_a_config_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_optimizer_args(["weight_decay"])


def _one_step(name: str, args: dict, lr: float = 1e-2):
    torch.manual_seed(0)
    # 64x64: bitsandbytes' 8-bit state only kicks in for tensors of 4096+ elements.
    param = torch.nn.Parameter(torch.randn(64, 64))
    before = param.detach().clone()
    optimizer = build_optimizer(name, [{"name": "unet", "params": [param], "lr": lr}], args)
    param.grad = torch.randn_like(param)
    optimizer.step()
    return optimizer, param, before


@pytest.mark.parametrize("name", ALL)
def test_each_optimizer_moves_the_weights(name):
    optimizer, param, before = _one_step(name, {})
    assert not torch.equal(param.detach(), before), f"{name} did not change the parameter"
    assert torch.isfinite(param).all()
    assert "unet" in group_lrs(optimizer)


def test_optimizer_args_reach_the_optimizer():
    plain, p1, before = _one_step("SGD", {})
    momentum, _, _ = _one_step("SGD", {"momentum": 0.9, "nesterov": True})
    assert momentum.param_groups[0]["momentum"] == 0.9 and momentum.param_groups[0]["nesterov"] is True
    adamw, _, _ = _one_step("AdamW", parse_optimizer_args(["betas=0.5,0.6", "weight_decay=0.2"]))
    assert adamw.param_groups[0]["betas"] == (0.5, 0.6) and adamw.param_groups[0]["weight_decay"] == 0.2


def test_unknown_optimizer_argument_names_the_optimizer():
    with pytest.raises(ConfigError, match="AdamW rejected"):
        _one_step("AdamW", {"no_such_thing": 1})


def test_adafactor_uses_the_configured_lr_unless_relative_step():
    fixed, _, _ = _one_step("Adafactor", {}, lr=1e-2)
    assert group_lrs(fixed)["unet"] == pytest.approx(1e-2)
    assert not uses_own_lr("Adafactor", {})
    args = {"relative_step": True, "warmup_init": True}
    own, _, _ = _one_step("Adafactor", args, lr=1e-2)
    assert uses_own_lr("Adafactor", args)
    # relative_step with warmup_init: 1e-6 * step after the first step, not the configured 1e-2
    assert group_lrs(own)["unet"] == pytest.approx(1e-6, rel=1e-3)


def test_adamw8bit_keeps_8bit_state():
    optimizer, param, _ = _one_step("AdamW8bit", {})
    assert optimizer.state[param]["state1"].dtype == torch.uint8


def test_prodigy_missing_package_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "prodigyopt":
            raise ImportError("no prodigyopt")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    with pytest.raises(ConfigError, match="prodigyopt") as info:
        _one_step("Prodigy", {})
    assert "pip install prodigyopt" in info.value.hint
