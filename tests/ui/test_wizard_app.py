"""WizardApp implements the Wizard protocol the screens are typed against (sdxl_tui.wizard_app)."""
from __future__ import annotations

import inspect

from sdxl_tui.app import WizardApp
from sdxl_tui.gpu_info import CPU
from sdxl_tui.wizard_app import Wizard


def test_wizard_app_has_every_member_of_the_protocol(tmp_path):
    app = WizardApp(cursor_blink=False, gpu=CPU, save_dir=tmp_path)
    assert isinstance(app, Wizard)  # each attribute and method is present


def test_wizard_app_methods_take_the_protocols_parameters():
    methods = [name for name, member in vars(Wizard).items()
               if inspect.isfunction(member) and not name.startswith("_")]
    assert "open_template" in methods and "goto_step" in methods
    for name in methods:
        expected = inspect.signature(getattr(Wizard, name)).parameters
        actual = inspect.signature(getattr(WizardApp, name)).parameters
        assert list(actual) == list(expected), name
        assert [p.default for p in actual.values()] == [p.default for p in expected.values()], name
