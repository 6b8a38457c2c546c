"""Optional packages are checked with the config (engine/config/extras.py): a missing one is a
ConfigError naming the pip extra, before any model loads."""
from __future__ import annotations

import pytest

from engine.config import extras
from engine.config.extras import OPTIONAL_PACKAGES, OptionalPackage, missing_packages, package_report
from engine.config.rules import check_rules, errors
from engine.config.schema import RunConfig
from engine.errors import ConfigError


def _hide(monkeypatch, *modules: str) -> None:
    real = extras.module_available
    monkeypatch.setattr(extras, "module_available", lambda name: name not in modules and real(name))


@pytest.mark.parametrize("option,value,module,extra", [
    ("log_with", "tensorboard", "tensorboard", "tensorboard"),
    ("optimizer_type", "Prodigy", "prodigyopt", "prodigy"),
])
def test_a_missing_package_is_a_config_error_naming_the_extra(monkeypatch, option, value, module, extra):
    cfg = RunConfig().with_values(**{option: value}, dataset_config="d.toml")
    assert not [i for i in check_rules(cfg) if "not installed" in i.message]  # installed here
    _hide(monkeypatch, module)
    found = [i for i in errors(check_rules(cfg)) if "not installed" in i.message]
    assert len(found) == 1 and found[0].keys == (option,)
    assert f"sdxl-tui[{extra}]" in found[0].message and value in found[0].message


def test_the_table_takes_new_rows_with_prefixes_and_lists():
    row = OptionalPackage("dadaptation", "dadaptation", "dadaptation", "optimizer_type", ("DAdapt*",))
    cfg = RunConfig().with_values(optimizer_type="AdamW")
    assert missing_packages(cfg, [row], available=lambda m: False) == []
    assert row.needed_by(cfg) is None
    assert _matches_prefix(row)
    report = {package: extra for package, extra, _ in package_report()}
    assert report["nvidia-ml-py"] == "nvml" and report["tensorboard"] == "tensorboard"
    assert all(r.extra for r in OPTIONAL_PACKAGES)


def _matches_prefix(row: OptionalPackage) -> bool:
    return extras.value_matches("DAdaptAdam", row.values) and not extras.value_matches("AdamW", row.values)


def test_engine_refuses_before_loading_the_model(monkeypatch, tmp_path, tiny_model, demo_dataset):
    from train_helpers import tiny_config

    import engine.model.load as load
    from engine.train.run import run

    _hide(monkeypatch, "tensorboard")
    monkeypatch.setattr(load, "load_sdxl", lambda *a, **k: pytest.fail("the model was loaded"))
    events: list = []
    result = run(tiny_config(tmp_path, tiny_model, demo_dataset, log_with="tensorboard"), events.append)
    assert isinstance(result.error, ConfigError) and result.error.exit_code == 78
    assert "sdxl-tui[tensorboard]" in str(result.error)
