"""`sdxl-tui options` shows each option's default, allowed values and sd-scripts' default."""
from __future__ import annotations

from sdxl_tui.cli import main


def test_options_show_ranges_choices_and_sd_scripts_defaults(capsys):
    assert main(["options", "timestep"]) == 0
    out = capsys.readouterr().out
    assert "training.min_timestep = None  (allowed: >= 0 and <= 999; or unset)" in out
    assert "training.max_timestep = None  (allowed: >= 1 and <= 1000; or unset)" in out
    assert main(["options", "loss_type"]) == 0
    assert "one of 'l1', 'l2', 'huber', 'smooth_l1'" in capsys.readouterr().out
    assert main(["options", "network_dim"]) == 0
    assert "sd-scripts default: 4" in capsys.readouterr().out
