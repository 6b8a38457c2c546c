"""The wizard driven by key presses only (Textual Pilot): start screen -> 7 steps -> saved
config equal to an expected TOML; Save & Train on that draft -> a LoRA file from the tiny model."""
from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import wizard_keys as keys

from engine.config.toml_file import dumps_config, load_config, loads_config
from sdxl_tui.app import WizardApp
from sdxl_tui.gpu_info import CPU
from sdxl_tui.screens.start import StartScreen, list_templates
from sdxl_tui.screens.step_base import StepScreen
from sdxl_tui.widgets.fields import ConfigField

EXPECTED = """
schema_version = 1

[model]
pretrained_model_name_or_path = "{model}"

[dataset]
dataset_config = "walk_lora.dataset.toml"

[network]
network_dim = 4
network_alpha = 2.0
network_train_unet_only = true

[optimizer]
optimizer_type = "AdamW"
learning_rate = 0.001

[training]
max_train_steps = 4

[precision]
mixed_precision = "no"
gradient_checkpointing = false

[caching]
cache_latents = true
cache_text_encoder_outputs = true

[saving]
output_dir = "{output}"
output_name = "walk_lora"

[sampling]
sample_prompts = "walk_lora.prompts.txt"
"""

EXPECTED_DATASET = """# sd-scripts dataset config written by the sdxl-tui wizard.

[general]
enable_bucket = true

[[datasets]]
resolution = 64
batch_size = 2
min_bucket_reso = 32
max_bucket_reso = 128
bucket_reso_steps = 32

[[datasets.subsets]]
image_dir = "{images}"
num_repeats = 2
caption_extension = ".txt"
class_tokens = "shape"
"""


@pytest.fixture(autouse=True)
def _private_state(tmp_path, monkeypatch):
    # recent runs go to a private state folder, never the developer's own
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def make_app(tmp_path: Path, **kwargs) -> WizardApp:
    return WizardApp(cursor_blink=False, gpu=CPU, save_dir=tmp_path / "runs", **kwargs)


@dataclass(frozen=True)
class KeyByKey:
    """Text typed one Key event per character, as `Pilot.press` sends them, in one burst (a fast typist):
    every character goes through the input's own key handling; the test waits for the app to settle
    once after the last one instead of twice after each (~0.2 s a key on a busy machine)."""
    text: str


def key_by_key(text: str) -> list:
    return [KeyByKey(text)]


async def play(pilot, sequence) -> None:
    """`keys.play`, with `KeyByKey` items typed as key events."""
    from textual import events

    pending: list = []
    for item in sequence:
        if not isinstance(item, KeyByKey):
            pending.append(item)
            continue
        await keys.play(pilot, pending)
        pending = []
        for character, name in zip(item.text, keys.keystrokes(item.text)):
            event = events.Key(name, character)
            event.set_sender(pilot.app)
            pilot.app._driver.send_message(event)
        await pilot.pause()
    await keys.play(pilot, pending)


async def walk_to_review(pilot, model: Path, images: Path, output: Path, enter: keys.Enter = keys.typed) -> None:
    """Start screen to the review step; text comes in with `enter` (a paste, or key by key). On every step the draft
    is the one `keys.draft_before` builds for it (what the snapshot tests open the wizard at)."""
    await pilot.press(*keys.start_defaults(len(list_templates())))
    for step, sequence in enumerate((keys.model_step(model, enter), keys.dataset_step(images, enter),
                                     keys.network_step(enter), keys.learning_step(enter), keys.memory_step(),
                                     keys.samples_step(output, enter), []), start=1):
        assert isinstance(pilot.app.screen, StepScreen) and pilot.app.screen.STEP == step
        assert replace(pilot.app.state, plan=None) == keys.draft_before(step, model, images, output)
        await play(pilot, sequence)
        await pilot.pause()


async def wait_for(predicate, seconds: float, pilot) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await pilot.pause(0.2)
    return predicate()


@pytest.fixture
def short_paths(tiny_model, demo_dataset):
    """A short folder holding links to the tiny model ("m") and the demo images ("i"): the walk types its paths
    key by key, and pytest's own temporary paths are three times longer (each key is a re-render)."""
    with tempfile.TemporaryDirectory(prefix="w") as folder:
        short = Path(folder)
        (short / "m").symlink_to(tiny_model.diffusers_dir, target_is_directory=True)
        (short / "i").symlink_to(demo_dataset.image_dir, target_is_directory=True)
        yield short


def test_walk_every_step_by_keys_to_the_expected_config(tmp_path, short_paths, demo_dataset, capsys, monkeypatch):
    model, images, output = short_paths / "m", short_paths / "i", short_paths / "o"
    saved = tmp_path / "runs" / "walk_lora.toml"

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 40)) as pilot:
            assert isinstance(app.screen, StartScreen)
            # typed key by key, as the one test that covers every field's per-key typing (the others paste)
            await walk_to_review(pilot, model, images, output, key_by_key)
            assert type(app.screen).__name__ == "ReviewStep"
            await pilot.press("ctrl+s")
            await pilot.pause()

    asyncio.run(scenario())
    expected = loads_config(EXPECTED.format(model=model, output=output))
    assert load_config(saved) == expected
    # the file is exactly the commented TOML the engine writes for that config
    assert saved.read_text() == dumps_config(expected)
    # the image folder is written resolved (the link's target)
    assert (tmp_path / "runs" / "walk_lora.dataset.toml").read_text() == EXPECTED_DATASET.format(
        images=demo_dataset.image_dir.resolve())
    assert (tmp_path / "runs" / "walk_lora.prompts.txt").read_text() == "a red circle --w 64 --h 64 --s 2\n"
    # the headless CLI accepts the saved file as it is (plan: same loading and checks as train)
    from sdxl_tui.cli import main

    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(["plan", str(saved)])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    assert "4 steps" in out.out


@pytest.mark.e2e
@pytest.mark.slow
def test_save_and_train_makes_a_lora(tmp_path, tiny_model, demo_dataset):
    output = tmp_path / "out"
    lora = output / "walk_lora.safetensors"

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(100, 40)) as pilot:
            # the draft the walk's keys make (test_walk_every_step_by_keys_to_the_expected_config checks it)
            await pilot.pause()
            app.begin(keys.draft_before(7, tiny_model.diffusers_dir, demo_dataset.image_dir, output), 7)
            await pilot.pause()
            assert type(app.screen).__name__ == "ReviewStep"
            await pilot.press("ctrl+t")
            events = output / "events.jsonl"

            def ended() -> bool:
                text = events.read_text() if events.exists() else ""
                return '"Finished"' in text or '"Failed"' in text

            assert await wait_for(ended, 400, pilot), events.read_text()[-2000:] if events.exists() else "no events"
            assert '"Finished"' in events.read_text(), events.read_text()[-2000:]
            assert lora.exists()

    asyncio.run(scenario())
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as handle:
        names = list(handle.keys())
    assert names and all(name.startswith("lora_unet_") for name in names)  # unet-only, as the walk chose


def test_invalid_value_is_refused_inline_and_the_draft_keeps_the_old_one(tmp_path):
    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*keys.start_defaults(len(list_templates())), "ctrl+n", "ctrl+n")
            assert type(app.screen).__name__ == "NetworkStep"
            await keys.play(pilot, keys.replace_text("0"))  # network_dim has ge=1
            field = app.screen.query_one("#field-network_dim", ConfigField)
            assert field.has_class("-invalid")
            assert "greater than or equal to 1" in str(field.query_one(".field-error").render())
            assert app.state.cfg.network.network_dim == 16
            await keys.play(pilot, keys.replace_text("abc"))
            assert "whole number" in str(field.query_one(".field-error").render())
            await keys.play(pilot, keys.replace_text("32"))
            assert not field.has_class("-invalid") and app.state.cfg.network.network_dim == 32
            assert "32 = 0.25" in str(app.screen.query_one("#network-summary").render())

    asyncio.run(scenario())


def test_caching_text_outputs_turns_on_unet_only_and_says_why(tmp_path):
    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*keys.start_defaults(len(list_templates())), "f5")
            assert type(app.screen).__name__ == "MemoryStep"
            assert not app.state.cfg.network.network_train_unet_only
            await pilot.press("tab", "tab", "tab", "tab", "space")
            assert app.state.cfg.caching.cache_text_encoder_outputs
            assert app.state.cfg.network.network_train_unet_only
            note = app.screen.query_one("#field-cache_text_encoder_outputs .field-note").render()
            assert "network_train_unet_only = true" in str(note)
            await pilot.press("escape", "escape")  # back to Network: the checkbox shows the change
            assert type(app.screen).__name__ == "NetworkStep"
            assert app.screen.query_one("#in-network_train_unet_only").value is True

    asyncio.run(scenario())


def test_back_keeps_values_and_palette_jumps_to_a_step(tmp_path):
    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press(*keys.start_defaults(len(list_templates())))
            await keys.play(pilot, [*keys.typed("some/model"), "ctrl+n", "escape"])
            assert isinstance(app.screen, StepScreen) and app.screen.STEP == 1
            assert app.screen.query_one("#in-pretrained_model_name_or_path").value == "some/model"
            await keys.play(pilot, ["ctrl+p", *keys.typed("go to step 6")])
            await pilot.pause(0.5)
            await pilot.press("enter")
            await pilot.pause()
            assert type(app.screen).__name__ == "SamplesStep"

    asyncio.run(scenario())


def test_open_template_resolves_its_paths_and_keeps_its_values(tmp_path):
    template = next(t for t in list_templates() if t.name == "cpu-demo")
    index = list_templates().index(template)

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press(*["down"] * index, "enter")
            assert isinstance(app.screen, StepScreen) and app.screen.STEP == 1
            source = load_config(template.path)
            assert app.state.cfg.network.network_dim == source.network.network_dim
            assert app.state.config_path is None  # a template is never overwritten

    asyncio.run(scenario())


def test_config_option_opens_a_saved_file_and_resaves_it_unchanged(tmp_path, tiny_model, demo_dataset):
    cfg = loads_config(EXPECTED.format(model=tiny_model.diffusers_dir, output=tmp_path / "o")).with_values(
        dataset_config=str(demo_dataset.dataset_toml), sample_prompts="")
    path = tmp_path / "mine.toml"
    text = "# my own comment survives\n" + dumps_config(cfg)
    path.write_text(text)

    async def scenario() -> None:
        app = make_app(tmp_path, config_path=path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert isinstance(app.screen, StepScreen) and app.screen.STEP == 1
            await pilot.press("ctrl+r")
            assert type(app.screen).__name__ == "ReviewStep"
            await pilot.press("ctrl+s")
            await pilot.pause()

    asyncio.run(scenario())
    assert path.read_text() == text


def test_recent_run_reopens_its_config_without_overwriting_it(tmp_path, demo_dataset):
    from sdxl_tui.recent_runs import load_recent, remember

    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    cfg = loads_config(EXPECTED.format(model="some/model", output=run_dir)).with_values(
        dataset_config=str(demo_dataset.dataset_toml), sample_prompts="", network_dim=12)
    (run_dir / "config.toml").write_text(dumps_config(cfg))
    before = (run_dir / "config.toml").read_text()
    remember(run_dir)
    assert [r.output_dir for r in load_recent()] == [run_dir.resolve()]

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("end", "enter")  # recent runs are listed last
            assert type(app.screen).__name__ == "ReviewStep"
            assert app.state.cfg.network.network_dim == 12
            await pilot.press("ctrl+s")
            await pilot.pause()

    asyncio.run(scenario())
    assert (run_dir / "config.toml").read_text() == before
    assert load_config(tmp_path / "runs" / "walk_lora.toml").network.network_dim == 12


def test_wizard_start_imports_no_torch_and_no_config_machinery():
    import subprocess
    import sys

    code = ("import sys; import sdxl_tui.commands.wizard, sdxl_tui.app; "
            "bad = [m for m in ('torch', 'diffusers', 'transformers', 'pydantic') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_import_an_sd_scripts_args_file_by_keys(tmp_path, demo_dataset):
    args = tmp_path / "kohya_args.toml"
    args.write_text(
        '[model_arguments]\npretrained_model_name_or_path = "some/sdxl-model"\n'
        f'[dataset_arguments]\ndataset_config = "{demo_dataset.dataset_toml}"\n'
        '[additional_network_arguments]\nnetwork_module = "networks.lora"\nnetwork_dim = 24\nnetwork_alpha = 12\n'
        '[optimizer_arguments]\noptimizer_type = "AdamW"\nlearning_rate = 3e-4\n')

    async def scenario() -> None:
        app = make_app(tmp_path)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("i")
            await keys.play(pilot, [*keys.typed(str(args)), "enter"])
            await pilot.pause()
            assert isinstance(app.screen, StepScreen) and app.screen.STEP == 1
            assert app.state.cfg.network.network_dim == 24
            assert app.state.cfg.optimizer.learning_rate == 3e-4
            assert app.state.config_path is None  # saving never overwrites the sd-scripts file
            assert app.state.import_notes

    asyncio.run(scenario())
