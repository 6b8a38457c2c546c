"""An sd-scripts args TOML that sets every optimizer and schedule option of issue 13 imports with
no "not used" note for them; names keep sd-scripts' meaning (case, torch.optim fallback, float
warm-up = ratio); the optimizer/schedule rules speak for options a choice does not read."""
from __future__ import annotations

import pytest

from engine.config.optimizer_names import OPTIMIZERS
from engine.config.rules import check_rules
from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.interop.kohya_import import convert_kohya_args

SCHEDULE_OPTIONS = {
    "lr_scheduler": "warmup_stable_decay", "lr_warmup_steps": 0.05, "lr_decay_steps": 0.2,
    "lr_scheduler_num_cycles": 2, "lr_scheduler_power": 1.0, "lr_scheduler_timescale": 10,
    "lr_scheduler_min_lr_ratio": 0.1, "lr_scheduler_type": "", "lr_scheduler_args": ["last_epoch=-1"],
    "optimizer_args": ["weight_decay=0.01"], "learning_rate": 1.0, "max_grad_norm": 1.0,
}


def _notes(doc: dict) -> dict:
    result = convert_kohya_args(doc, dataset_config="/data/dataset.toml")
    return result.config, {n.key: n for n in result.notes}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_name_and_schedule_option_imports_without_a_not_used_note(name):
    cfg, notes = _notes({"optimizer_arguments": {"optimizer_type": name.lower(), **SCHEDULE_OPTIONS}})
    assert cfg.optimizer.optimizer_type == name
    for key in ("optimizer_type", *SCHEDULE_OPTIONS):
        assert notes[key].status != "not used", notes[key]
    o = cfg.optimizer
    assert (o.lr_scheduler, o.lr_warmup_steps, o.lr_decay_steps, o.lr_scheduler_timescale,
            o.lr_scheduler_min_lr_ratio, o.lr_scheduler_num_cycles) == ("warmup_stable_decay", 0.05, 0.2, 10, 0.1, 2)
    assert o.lr_scheduler_args == ["last_epoch=-1"]


def test_every_schedule_name_imports():
    from engine.config.learning_sections import SchedulerName

    for name in SchedulerName.__args__:
        cfg, notes = _notes({"lr_scheduler": name})
        assert cfg.optimizer.lr_scheduler == name and notes["lr_scheduler"].status == "mapped"


def test_bare_torch_optim_name_becomes_its_class_path_and_a_class_path_stays():
    cfg, notes = _notes({"optimizer_type": "RAdam"})
    assert cfg.optimizer.optimizer_type == "torch.optim.RAdam" and notes["optimizer_type"].status == "converted"
    cfg, notes = _notes({"optimizer_type": "bitsandbytes.optim.AdEMAMix8bit"})
    assert cfg.optimizer.optimizer_type == "bitsandbytes.optim.AdEMAMix8bit"
    assert notes["optimizer_type"].status == "mapped"


def test_unknown_optimizer_is_refused_not_replaced():
    with pytest.raises(ConfigError, match="unknown optimizer_type 'DAdaptAdamm'"):
        _notes({"optimizer_type": "DAdaptAdamm", "learning_rate": 1.0})


def test_float_warmup_is_a_ratio_and_a_float_above_one_is_refused():
    cfg, notes = _notes({"lr_warmup_steps": 0.1, "lr_decay_steps": 30})
    assert cfg.optimizer.lr_warmup_steps == 0.1 and "ratio" in notes["lr_warmup_steps"].detail
    assert cfg.optimizer.lr_decay_steps == 30
    with pytest.raises(ConfigError, match="lr_warmup_steps = 10.0 is a float"):
        _notes({"lr_warmup_steps": 10.0})


# ---------------------------------------------------------------- rules


def _issues(**values) -> dict:
    cfg = RunConfig().with_values(pretrained_model_name_or_path="m", dataset_config="d.toml", **values)
    return {issue.message: issue for issue in check_rules(cfg)}


def test_adafactor_schedule_needs_adafactor_with_relative_step():
    bad = _issues(optimizer_type="AdamW", lr_scheduler="adafactor")
    assert any(i.level == "error" and "adafactor" in m for m, i in bad.items())
    bad = _issues(optimizer_type="Adafactor", optimizer_args=["relative_step=False"], lr_scheduler="adafactor")
    assert any(i.level == "error" for i in bad.values())
    good = _issues(optimizer_type="Adafactor", lr_scheduler="adafactor")
    assert not [i for i in good.values() if i.level == "error"]


def test_adafactor_relative_step_says_its_schedule_is_replaced():
    issues = _issues(optimizer_type="Adafactor", lr_scheduler="cosine")
    found = [i for m, i in issues.items() if "replaced by the adafactor schedule" in m]
    assert found and found[0].fix["lr_scheduler"] == "adafactor"
    plain = _issues(optimizer_type="Adafactor", optimizer_args=["relative_step=False"], lr_scheduler="cosine")
    assert not [m for m in plain if "replaced" in m]


def test_schedule_free_says_the_schedule_is_not_used():
    issues = _issues(optimizer_type="AdamWScheduleFree", lr_scheduler="cosine", lr_warmup_steps=5)
    found = [i for m, i in issues.items() if "replaces the learning-rate schedule" in m]
    assert found and found[0].fix == {"lr_scheduler": "constant", "lr_scheduler_type": "", "lr_warmup_steps": 0}
    assert not [m for m in _issues(optimizer_type="AdamWScheduleFree") if "replaces" in m]


def test_timing_options_a_schedule_does_not_read_are_named():
    issues = _issues(lr_scheduler="cosine", lr_scheduler_power=2.0, lr_decay_steps=10, lr_scheduler_timescale=4)
    for key in ("lr_scheduler_power", "lr_decay_steps", "lr_scheduler_timescale"):
        assert any(m.startswith(f"{key} = ") and "not used" in m for m in issues), key
    assert not [m for m in _issues(lr_scheduler="polynomial", lr_scheduler_power=2.0) if "not used" in m]


def test_lr_scheduler_type_takes_no_warmup_and_replaces_lr_scheduler():
    issues = _issues(lr_scheduler_type="CosineAnnealingLR", lr_scheduler="cosine", lr_warmup_steps=3)
    levels = {i.level for m, i in issues.items() if "lr_scheduler_type" in m}
    assert levels == {"error", "warning"}


def test_adaptive_optimizers_warn_about_a_small_learning_rate():
    assert any("1.0 is usual" in m for m in _issues(optimizer_type="Prodigy", learning_rate=1e-4))
    assert not any("1.0 is usual" in m for m in _issues(optimizer_type="Prodigy", learning_rate=1.0))
