"""Every lr_scheduler sd-scripts accepts, with its timing options, gives the library's own curve
step by step (transformers.get_scheduler / diffusers.optimization.get_scheduler called the way
sd-scripts' get_scheduler_fix calls them); warm-up as count or ratio; lr_scheduler_type classes."""
from __future__ import annotations

import math

import pytest
import torch

from engine.config.learning_sections import OptimizerSection
from engine.errors import ConfigError
from engine.train.schedulers import build_scheduler_for, parse_scheduler_args, resolve_warmup_steps

TOTAL = 20


def _optimizer():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [a], "lr": 1.0, "name": "unet"}, {"params": [b], "lr": 0.1, "name": "te1"}],
                           lr=1.0)


def _curve(scheduler, optimizer, steps: int = TOTAL) -> list[list[float]]:
    lrs = []
    for _ in range(steps):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def _ours(**options) -> list[list[float]]:
    optimizer = _optimizer()
    return _curve(build_scheduler_for(optimizer, OptimizerSection(**options), TOTAL), optimizer)


def _library(name: str, **kwargs) -> list[list[float]]:
    from transformers import get_scheduler

    optimizer = _optimizer()
    return _curve(get_scheduler(name, optimizer, **kwargs), optimizer)


# (our options, the library call sd-scripts makes for them, with TOTAL steps)
CASES = {
    "constant": ({}, {}),
    "constant_with_warmup": ({"lr_warmup_steps": 4}, {"num_warmup_steps": 4}),
    "linear": ({"lr_warmup_steps": 3}, {"num_warmup_steps": 3, "num_training_steps": TOTAL}),
    "cosine": ({"lr_warmup_steps": 0.1}, {"num_warmup_steps": 2, "num_training_steps": TOTAL}),
    "cosine_with_restarts": ({"lr_warmup_steps": 2, "lr_scheduler_num_cycles": 3},
                             {"num_warmup_steps": 2, "num_training_steps": TOTAL,
                              "scheduler_specific_kwargs": {"num_cycles": 3}}),
    "polynomial": ({"lr_warmup_steps": 2, "lr_scheduler_power": 2.0},
                   {"num_warmup_steps": 2, "num_training_steps": TOTAL, "scheduler_specific_kwargs": {"power": 2.0}}),
    "inverse_sqrt": ({"lr_warmup_steps": 4, "lr_scheduler_timescale": 3},
                     {"num_warmup_steps": 4, "scheduler_specific_kwargs": {"timescale": 3}}),
    "cosine_with_min_lr": ({"lr_warmup_steps": 2, "lr_scheduler_min_lr_ratio": 0.1, "lr_scheduler_num_cycles": 1},
                           {"num_warmup_steps": 2, "num_training_steps": TOTAL,
                            "scheduler_specific_kwargs": {"min_lr_rate": 0.1, "num_cycles": 0.5}}),
    "warmup_stable_decay": ({"lr_warmup_steps": 3, "lr_decay_steps": 0.25, "lr_scheduler_min_lr_ratio": 0.2},
                            {"num_warmup_steps": 3, "num_training_steps": TOTAL,
                             "scheduler_specific_kwargs": {"num_decay_steps": 5, "num_stable_steps": 12,
                                                           "min_lr_ratio": 0.2, "num_cycles": 0.5}}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_schedule_is_the_library_curve(name):
    options, library_kwargs = CASES[name]
    ours = _ours(lr_scheduler=name, **options)
    assert ours == _library(name, **library_kwargs)
    assert [lrs[1] for lrs in ours] == pytest.approx([lrs[0] * 0.1 for lrs in ours])  # each group its own base
    if name != "constant":
        assert len({lrs[0] for lrs in ours}) > 2, f"{name} should change the rate over the run"


def test_piecewise_constant_is_diffusers_curve_with_step_rules_from_lr_scheduler_args():
    from diffusers.optimization import get_scheduler

    ours = _ours(lr_scheduler="piecewise_constant", lr_scheduler_args=["step_rules=1:5,0.5:10,0.1"])
    optimizer = _optimizer()
    library = _curve(get_scheduler("piecewise_constant", optimizer, step_rules="1:5,0.5:10,0.1"), optimizer)
    assert ours == library
    assert [lrs[0] for lrs in ours[4:6]] == [1.0, 0.5] and ours[-1][0] == pytest.approx(0.1)


def test_shapes_are_what_the_names_say():
    linear = [lrs[0] for lrs in _ours(lr_scheduler="linear", lr_warmup_steps=4)]
    assert linear[:5] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0]) and linear[-1] == pytest.approx(1 / 16)
    cosine = [lrs[0] for lrs in _ours(lr_scheduler="cosine")]
    assert cosine == pytest.approx([0.5 * (1 + math.cos(math.pi * s / TOTAL)) for s in range(TOTAL)])
    floor = [lrs[0] for lrs in _ours(lr_scheduler="cosine_with_min_lr", lr_scheduler_min_lr_ratio=0.3)]
    assert min(floor) >= 0.3 - 1e-9
    wsd = [lrs[0] for lrs in _ours(lr_scheduler="warmup_stable_decay", lr_warmup_steps=2, lr_decay_steps=5)]
    assert wsd[2:15] == [1.0] * 13 and wsd[-1] < 0.2


def test_warmup_below_one_is_a_ratio_of_total_steps():
    assert resolve_warmup_steps(0.25, 100) == 25
    assert resolve_warmup_steps(5, 100) == 5
    assert resolve_warmup_steps(0.07, 20) == 1  # int(), as sd-scripts


def test_lr_scheduler_type_builds_a_torch_class_or_a_class_path():
    ours = _ours(lr_scheduler_type="CosineAnnealingLR", lr_scheduler_args=["T_max=10", "eta_min=0.01"])
    optimizer = _optimizer()
    library = _curve(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10, eta_min=0.01), optimizer)
    assert ours == library
    path = _ours(lr_scheduler_type="torch.optim.lr_scheduler.StepLR", lr_scheduler_args=["step_size=5", "gamma=0.5"])
    assert [lrs[0] for lrs in path[3:7]] == [1.0, 1.0, 0.5, 0.5]
    with pytest.raises(ConfigError, match="no such scheduler class"):
        _ours(lr_scheduler_type="NoSuchLR")
    with pytest.raises(ConfigError, match="lr_scheduler_type StepLR"):
        _ours(lr_scheduler_type="StepLR")  # step_size missing


def test_scheduler_args_are_literals_or_text():
    assert parse_scheduler_args(["T_max=100", "eta_min=1e-6", "step_rules=1:10,0.1", 'name="x"']) == {
        "T_max": 100, "eta_min": 1e-6, "step_rules": "1:10,0.1", "name": "x"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_scheduler_args(["T_max"])


def test_adafactor_schedule_reports_the_optimizers_own_rate():
    from transformers.optimization import AdafactorSchedule

    from engine.train.optimizers import build_optimizer, group_lrs

    param = torch.nn.Parameter(torch.randn(8, 8))
    optimizer = build_optimizer("Adafactor", [{"name": "unet", "params": [param], "lr": 1e-3}], {})
    scheduler = build_scheduler_for(optimizer, OptimizerSection(optimizer_type="Adafactor", lr_scheduler="adafactor",
                                                                learning_rate=1e-3), TOTAL, own_step_size=True)
    assert isinstance(scheduler, AdafactorSchedule) and scheduler.get_last_lr() == [1e-3]
    param.grad = torch.randn_like(param)
    optimizer.step()
    scheduler.step()
    assert group_lrs(optimizer)["unet"] != 1e-3


def test_a_schedule_that_cannot_be_built_is_a_config_error():
    with pytest.raises(ConfigError, match="warmup_stable_decay"):
        _ours(lr_scheduler="warmup_stable_decay", lr_warmup_steps=15, lr_decay_steps=10)
