"""The wizard with kohya_ss users' files: a folder-style image folder becomes its subsets, and
the import (key "i") reads a kohya_ss GUI JSON."""
from __future__ import annotations

import asyncio
import json
import shutil

import pytest
import wizard_keys as keys

from sdxl_tui.app import WizardApp
from sdxl_tui.gpu_info import CPU
from sdxl_tui.screens.start import list_templates
from sdxl_tui.screens.step_base import StepScreen


@pytest.fixture(autouse=True)
def _private_state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def make_app(tmp_path) -> WizardApp:
    return WizardApp(cursor_blink=False, gpu=CPU, save_dir=tmp_path / "runs")


def test_image_folder_step_offers_the_subfolders_as_subsets(tmp_path, demo_dataset):
    for name in ("20_ohwx shape", "3_more", "stray"):
        shutil.copytree(demo_dataset.image_dir, tmp_path / "img" / name)

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*keys.start_defaults(len(list_templates())), "ctrl+n")
            assert type(app.screen).__name__ == "DatasetStep"
            await keys.play(pilot, ["tab", *keys.typed(str(tmp_path / "img"))])
            await pilot.pause()
            draft = app.state.dataset_draft
            assert [(s.num_repeats, s.class_tokens) for s in draft.subsets] == [(20, "ohwx shape"), (3, "more")]
            listed = str(app.screen.query_one("#ds-subsets").render())
            assert "2 subsets" in listed and "'stray' is skipped" in listed and "'10_stray'" in listed

    asyncio.run(scenario())


def test_import_reads_a_kohya_ss_gui_json(tmp_path):
    gui = {"LoRA_type": "Kohya LoCon", "sdxl": True, "optimizer": "AdamW", "learning_rate": 3e-4,
           "unet_lr": 3e-4, "text_encoder_lr": 0, "network_dim": 24, "network_alpha": 12, "conv_dim": 8,
           "conv_alpha": 4, "max_resolution": "1024,1024", "epoch": 3, "max_train_steps": 0}
    path = tmp_path / "kohya_gui.json"
    path.write_text(json.dumps(gui))

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("i")
            await keys.play(pilot, [*keys.typed(str(path)), "enter"])
            await pilot.pause()
            assert isinstance(app.screen, StepScreen) and app.screen.STEP == 1
            cfg = app.state.cfg
            assert cfg.network.network_dim == 24 and cfg.network.network_args == ["conv_dim=8", "conv_alpha=4"]
            assert cfg.network.network_train_unet_only and cfg.training.max_train_epochs == 3
            assert any("LoRA_type" in n for n in app.state.import_notes)
            assert app.state.config_path is None

    asyncio.run(scenario())
