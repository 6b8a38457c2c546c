"""The learning-rate curves each scheduler gives over a run, including warm-up as count or ratio."""
from __future__ import annotations

import math

import pytest
import torch

from engine.train.schedulers import build_scheduler, resolve_warmup_steps


def _curve(name: str, total: int = 10, warmup: float = 0, **kwargs) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": 1.0, "name": "unet"}], lr=1.0)
    scheduler = build_scheduler(optimizer, name, total_steps=total, lr_warmup_steps=warmup, **kwargs)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_constant_stays():
    assert _curve("constant") == [1.0] * 10


def test_constant_with_warmup_rises_then_stays():
    assert _curve("constant_with_warmup", warmup=4) == pytest.approx([0, 0.25, 0.5, 0.75] + [1.0] * 6)


def test_linear_decays_to_zero():
    assert _curve("linear", total=4) == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_cosine_follows_half_cosine():
    lrs = _curve("cosine", total=4)
    assert lrs == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 4)) for s in range(4)])


def test_cosine_with_restarts_restarts():
    lrs = _curve("cosine_with_restarts", total=8, num_cycles=2)
    assert lrs[0] == pytest.approx(1.0) and lrs[4] == pytest.approx(1.0)
    assert lrs[3] < lrs[4] and lrs[2] == pytest.approx(0.5)


def test_polynomial_uses_power():
    assert _curve("polynomial", total=4, power=2.0) == pytest.approx([1.0, 0.5625, 0.25, 0.0625])
    assert _curve("polynomial", total=4, power=1.0) == pytest.approx(_curve("linear", total=4))


def test_warmup_below_one_is_a_ratio_of_total_steps():
    assert resolve_warmup_steps(0.25, 100) == 25
    assert resolve_warmup_steps(5, 100) == 5
    lrs = _curve("linear", total=20, warmup=0.1)
    assert lrs[0] == 0 and lrs[1] == pytest.approx(0.5) and lrs[2] == pytest.approx(1.0)


def test_groups_keep_their_own_base_rates():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])
    scheduler = build_scheduler(optimizer, "linear", total_steps=2)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.5, 0.05])
