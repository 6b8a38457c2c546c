"""scale_weight_norms figures (sd-scripts' "Keys Scaled" / "Average key norm") reach the
dashboard's status table from the Step events."""
from __future__ import annotations

from rich.console import Console

from engine.events import types as ev
from sdxl_tui.run_model import fold


def _render(view) -> str:
    from sdxl_tui.widgets.run_status import status_table

    console = Console(width=140, record=True)
    console.print(status_table(view, 30))
    return console.export_text()


def test_keys_scaled_and_mean_norm_are_shown():
    steps = [ev.Step(time=1.0, step=1, total_steps=4, loss=0.5, lr={"unet": 1e-4}, keys_scaled=7, mean_norm=0.8125,
                     max_norm=1.0)]
    view = fold(steps)
    assert view.weight_norms == (7, 0.8125, 1.0)
    assert "keys scaled 7, mean norm 0.812" in _render(view)
    plain = fold([ev.Step(time=1.0, step=1, total_steps=4, loss=0.5, lr={"unet": 1e-4})])
    assert plain.weight_norms is None and "keys scaled" not in _render(plain)
