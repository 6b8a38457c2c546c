"""The validation loss in the views (issue 14): the run model keeps it as a second series beside
the training loss, the loss chart draws it in its own colour, and `watch --plain` prints it."""
from __future__ import annotations

from argparse import Namespace

import dashboard_script as script
import pytest

from sdxl_tui.commands import watch
from sdxl_tui.run_model import RunModel
from sdxl_tui.widgets.loss_chart import VALIDATION_STYLE, plot


def test_run_model_keeps_the_validation_series_beside_the_training_loss():
    view = RunModel(max_points=64).apply_all(script.validated()).view()
    assert view.validation_steps == (100, 200, 300, 400)
    assert view.validation_losses == pytest.approx((0.175, 0.15, 0.125, 0.1))
    assert view.validation_loss == 0.1 and len(view.loss_steps) <= 64  # the training series is downsampled
    assert any(line.message == "validation loss 0.1000 at step 400 (end of epoch 4, 3 batches)" for line in view.log)


def test_loss_chart_draws_the_validation_line_in_its_colour():
    view = RunModel().apply_all(script.validated()).view()
    with_validation = plot(view.loss_steps, view.loss_raw, view.loss_smooth, 60, 12,
                           (view.validation_steps, view.validation_losses))
    without = plot(view.loss_steps, view.loss_raw, view.loss_smooth, 60, 12)
    styles = {str(span.style) for line in with_validation for span in line.spans}
    assert VALIDATION_STYLE in styles
    assert VALIDATION_STYLE not in {str(span.style) for line in without for span in line.spans}


def test_watch_plain_prints_the_validation_loss(tmp_path, capsys):
    (tmp_path / "events.jsonl").write_text("".join(e.to_json() + "\n" for e in script.validated()), encoding="utf-8")
    assert watch.run(Namespace(output_dir=str(tmp_path), plain=True, no_bell=True)) == 0
    lines = capsys.readouterr().out.splitlines()
    validation = [line for line in lines if line.startswith("validation loss")]
    assert validation[0] == "validation loss 0.1750 at step 100 (end of epoch 1, 3 batches)" and len(validation) == 4
    # in order: after the step it was computed at
    assert lines.index(validation[0]) == next(i for i, line in enumerate(lines) if line.startswith("step 100/")) + 1
