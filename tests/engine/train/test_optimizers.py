"""Every optimizer_type sd-scripts accepts is built from its package and really updates weights;
optimizer_args parse to Python values and reach the optimizer; names match in any case; an
unknown name or a missing package is refused by name."""
from __future__ import annotations

import pytest
import torch

from engine.config.optimizer_names import OPTIMIZERS, canonical_optimizer_name, optimizer_spec
from engine.errors import ConfigError
from engine.train.optimizers import build_optimizer, group_lrs, parse_optimizer_args, parse_value, uses_own_lr

ALL = list(OPTIMIZERS)
# sd-scripts' get_optimizer: name -> the class it builds (module.Class)
SD_SCRIPTS_CLASSES = {
    "AdamW": "torch.optim.adamw.AdamW", "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "PagedAdamW": "bitsandbytes.optim.adamw.PagedAdamW", "PagedAdamW8bit": "bitsandbytes.optim.adamw.PagedAdamW8bit",
    "PagedAdamW32bit": "bitsandbytes.optim.adamw.PagedAdamW32bit", "Lion8bit": "bitsandbytes.optim.lion.Lion8bit",
    "PagedLion8bit": "bitsandbytes.optim.lion.PagedLion8bit", "SGDNesterov": "torch.optim.sgd.SGD",
    "SGDNesterov8bit": "bitsandbytes.optim.sgd.SGD8bit",
    "DAdaptation": "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
    "DAdaptAdamPreprint": "dadaptation.experimental.dadapt_adam_preprint.DAdaptAdamPreprint",
    "DAdaptAdam": "dadaptation.dadapt_adam.DAdaptAdam", "DAdaptLion": "dadaptation.dadapt_lion.DAdaptLion",
    "DAdaptAdaGrad": "dadaptation.dadapt_adagrad.DAdaptAdaGrad", "DAdaptAdan": "dadaptation.dadapt_adan.DAdaptAdan",
    "DAdaptAdanIP": "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP",
    "DAdaptSGD": "dadaptation.dadapt_sgd.DAdaptSGD", "Prodigy": "prodigyopt.prodigy.Prodigy",
    "Adafactor": "transformers.optimization.Adafactor", "AdEMAMix8bit": "bitsandbytes.optim.ademamix.AdEMAMix8bit",
    "PagedAdEMAMix8bit": "bitsandbytes.optim.ademamix.PagedAdEMAMix8bit",
    "RAdamScheduleFree": "schedulefree.radam_schedulefree.RAdamScheduleFree",
    "AdamWScheduleFree": "schedulefree.adamw_schedulefree.AdamWScheduleFree",
    "SGDScheduleFree": "schedulefree.sgd_schedulefree.SGDScheduleFree",
}


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


def _one_step(name: str, args: dict, lr: float = 1e-2, steps: int = 1):
    torch.manual_seed(0)
    # 64x64: bitsandbytes' 8-bit state only kicks in for tensors of 4096+ elements.
    param = torch.nn.Parameter(torch.randn(64, 64))
    before = param.detach().clone()
    optimizer = build_optimizer(name, [{"name": "unet", "params": [param], "lr": lr}], args)
    for _ in range(steps):
        param.grad = torch.randn_like(param)
        optimizer.step()
    return optimizer, param, before


@pytest.mark.parametrize("name", ALL)
def test_each_optimizer_moves_the_weights(name):
    # RAdam (schedule-free too) makes no update while its variance estimate is not yet rectified (step <= 4)
    optimizer, param, before = _one_step(name, {}, steps=6 if name == "RAdamScheduleFree" else 1)
    assert not torch.equal(param.detach(), before), f"{name} did not change the parameter"
    assert torch.isfinite(param).all()
    assert "unet" in group_lrs(optimizer)
    cls = type(optimizer)
    if name in SD_SCRIPTS_CLASSES:
        assert f"{cls.__module__}.{cls.__name__}" == SD_SCRIPTS_CLASSES[name]


def test_names_match_in_any_case_and_class_paths_pass_through():
    assert canonical_optimizer_name("adamw8bit") == "AdamW8bit"
    assert canonical_optimizer_name("DADAPTADAM") == "DAdaptAdam"
    assert canonical_optimizer_name("prodigy") == "Prodigy"
    assert canonical_optimizer_name("torch.optim.RAdam") == "torch.optim.RAdam"
    assert canonical_optimizer_name("NoSuchOptimizer") is None
    assert optimizer_spec("DAdaptAdam").extra == "dadaptation" and optimizer_spec("AdamW8bit").extra == ""


def test_unknown_name_is_refused_not_replaced():
    from pydantic import ValidationError

    from engine.config.schema import RunConfig

    assert RunConfig().with_values(optimizer_type="dadaptation").optimizer.optimizer_type == "DAdaptation"
    with pytest.raises(ValidationError, match="unknown optimizer_type 'Adam8bitt'"):
        RunConfig().with_values(optimizer_type="Adam8bitt")


def test_a_class_path_gets_the_optimizer_args():
    optimizer, _, _ = _one_step("torch.optim.RAdam", {"weight_decay": 0.25, "decoupled_weight_decay": True})
    assert type(optimizer) is torch.optim.RAdam
    assert optimizer.param_groups[0]["weight_decay"] == 0.25 and optimizer.param_groups[0]["decoupled_weight_decay"]
    with pytest.raises(ConfigError, match="has no class NoSuch"):
        _one_step("torch.optim.NoSuch", {})
    with pytest.raises(ConfigError, match="no module no_such_package is installed"):
        _one_step("no_such_package.Opt", {})


def test_sgd_nesterov_has_sd_scripts_momentum_and_nesterov():
    sgd, _, _ = _one_step("SGDNesterov", {})
    assert sgd.param_groups[0]["nesterov"] is True and sgd.param_groups[0]["momentum"] == 0.9
    sgd, _, _ = _one_step("SGDNesterov", {"momentum": 0.5})
    assert sgd.param_groups[0]["momentum"] == 0.5
    with pytest.raises(ConfigError, match="always uses nesterov=True"):
        _one_step("SGDNesterov", {"nesterov": False})


def test_adaptive_optimizers_report_d_times_lr():
    for name in ("DAdaptAdam", "Prodigy"):
        torch.manual_seed(0)
        param = torch.nn.Parameter(torch.randn(64, 64))
        optimizer = build_optimizer(name, [{"name": "unet", "params": [param], "lr": 1.0}], {})
        for _ in range(3):
            param.grad = torch.randn_like(param)
            optimizer.step()
        d = optimizer.param_groups[0]["d"]
        assert d != 1.0 and group_lrs(optimizer)["unet"] == pytest.approx(d * 1.0)


def test_schedule_free_starts_in_train_mode_and_reports_its_warmup_rate():
    optimizer, _, _ = _one_step("AdamWScheduleFree", {"warmup_steps": 4}, lr=1e-2)
    assert optimizer.param_groups[0]["train_mode"] is True
    # one step of a 4-step warm-up: lr * 1/4 (schedulefree's own warm-up)
    assert group_lrs(optimizer)["unet"] == pytest.approx(1e-2 * 0.25)


@pytest.mark.parametrize("package, extra", [("prodigyopt", "prodigy"), ("dadaptation", "dadaptation"),
                                            ("schedulefree", "schedulefree")])
def test_missing_package_is_a_config_error_naming_the_extra(monkeypatch, package, extra):
    import importlib.util

    from engine.config.rules import check_rules
    from engine.config.schema import RunConfig

    name = {"prodigyopt": "Prodigy", "dadaptation": "DAdaptAdam", "schedulefree": "AdamWScheduleFree"}[package]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real(n, *a))
    with pytest.raises(ConfigError, match=f"sdxl-tui\\[{extra}\\]"):
        _one_step(name, {})
    issues = [i for i in check_rules(RunConfig().with_values(optimizer_type=name)) if "optimizer_type" in i.keys]
    assert issues and issues[0].level == "error" and f"sdxl-tui[{extra}]" in issues[0].message


def test_optimizer_args_reach_the_optimizer():
    plain, p1, before = _one_step("SGD", {})
    momentum, _, _ = _one_step("SGD", {"momentum": 0.9, "nesterov": True})
    assert momentum.param_groups[0]["momentum"] == 0.9 and momentum.param_groups[0]["nesterov"] is True
    adamw, _, _ = _one_step("AdamW", parse_optimizer_args(["betas=0.5,0.6", "weight_decay=0.2"]))
    assert adamw.param_groups[0]["betas"] == (0.5, 0.6) and adamw.param_groups[0]["weight_decay"] == 0.2


def test_unknown_optimizer_argument_names_the_optimizer():
    with pytest.raises(ConfigError, match="AdamW rejected"):
        _one_step("AdamW", {"no_such_thing": 1})


def test_adafactor_defaults_to_relative_step_as_sd_scripts():
    own, _, _ = _one_step("Adafactor", {}, lr=1e-2)
    group = own.param_groups[0]
    assert group["relative_step"] is True and group["lr"] is None and uses_own_lr("Adafactor", {})
    # transformers' defaults for the rest (sd-scripts passes none): scale_parameter on, warmup_init off
    assert group["scale_parameter"] is True and group["warmup_init"] is False
    # relative_step: min(1e-2, 1/sqrt(step)) times the parameter's RMS, not the configured lr
    rms = float(own.state[group["params"][0]]["RMS"])
    assert group_lrs(own)["unet"] == pytest.approx(1e-2 * max(1e-3, rms), rel=1e-3)
    fixed, _, _ = _one_step("Adafactor", {"relative_step": False}, lr=1e-2)
    assert group_lrs(fixed)["unet"] == pytest.approx(1e-2) and not uses_own_lr("Adafactor", {"relative_step": False})
    # warmup_init turns relative_step back on (sd-scripts), 1e-6 * step after one step
    args = {"relative_step": False, "warmup_init": True, "scale_parameter": False}
    warm, _, _ = _one_step("Adafactor", args, lr=1e-2)
    assert uses_own_lr("Adafactor", args) and group_lrs(warm)["unet"] == pytest.approx(1e-6, rel=1e-3)


def test_adamw8bit_keeps_8bit_state():
    optimizer, param, _ = _one_step("AdamW8bit", {})
    assert optimizer.state[param]["state1"].dtype == torch.uint8


def test_schedule_free_saves_see_the_eval_weights_and_training_weights_come_back_exactly():
    from engine.train.optimizer_setup import in_eval_mode

    optimizer, param, _ = _one_step("AdamWScheduleFree", {}, steps=3)
    training = param.detach().clone()
    z = optimizer.state[param]["z"].clone()
    seen = in_eval_mode(optimizer, [param])(lambda: param.detach().clone())()
    beta1 = optimizer.param_groups[0]["betas"][0]
    assert torch.equal(seen, training.lerp(z, 1 - 1 / beta1))  # schedulefree eval(): x from y and z
    assert not torch.equal(seen, training)
    assert torch.equal(param.detach(), training) and optimizer.param_groups[0]["train_mode"] is True
    plain, p, _ = _one_step("AdamW", {})

    def fn():
        return None

    assert in_eval_mode(plain, [p])(fn) is fn


@pytest.mark.parametrize("options, message", [
    ({"optimizer_type": "DAdaptAdam", "learning_rate": 1.0}, "sdxl-tui[dadaptation]"),
    ({"optimizer_type": "torch.optim.NoSuchOptimizer"}, "has no class NoSuchOptimizer"),
])
def test_run_refuses_a_missing_optimizer_before_any_model_loads(tmp_path, tiny_model, demo_dataset, monkeypatch,
                                                                options, message):
    import importlib.util

    from train_helpers import tiny_config

    import engine.train.run as run_module

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "dadaptation" else real(n, *a))
    monkeypatch.setattr(run_module, "load_model", lambda session, **_: pytest.fail("the model was loaded"))
    result = run_module.run(tiny_config(tmp_path, tiny_model, demo_dataset, **options), lambda event: None)
    assert not result.ok and result.exit_code == 78 and message in str(result.error)
    assert not (tmp_path / "out").exists(), "the output folder was claimed"


def test_adamw_takes_the_fused_kernel_for_fp32_parameters_unless_args_choose():
    """torch's fused AdamW: the same update as its default loop in one kernel per tensor
    (fewer dispatched ops per step; issue 17). Chosen only for fp32 parameters, never over an
    optimizer_args choice, and it moves the weights as the unfused loop does."""
    def groups(dtype=torch.float32):
        torch.manual_seed(0)
        return [{"params": [torch.nn.Parameter(torch.randn(8, 4, dtype=dtype))], "lr": 1e-2}]

    fused, plain = groups(), groups()
    a = build_optimizer("AdamW", fused, {})
    b = build_optimizer("AdamW", plain, {"fused": False})
    assert a.defaults["fused"] is True and b.defaults["fused"] is False
    for _ in range(3):
        for opt, gs in ((a, fused), (b, plain)):
            gs[0]["params"][0].grad = torch.ones(8, 4)
            opt.step()
    torch.testing.assert_close(fused[0]["params"][0], plain[0]["params"][0])
    assert not build_optimizer("AdamW", groups(), {"foreach": True}).defaults.get("fused")
    assert not build_optimizer("AdamW", groups(torch.bfloat16), {}).defaults.get("fused")
