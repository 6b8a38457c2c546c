"""Key sequences shared by the wizard's Pilot and snapshot tests (keyboard only).

A sequence is key names plus `Paste` items: text arrives mostly as one terminal paste (what a
bracketed paste sends), one event instead of one re-render per character. Typing key by key is
`keystrokes`, kept by the walk test in test_wizard_pilot.py so the per-key path stays covered.
Play a sequence with `play(pilot, sequence)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union


@dataclass(frozen=True)
class Paste:
    """Text pasted into the focused input in one go (Textual's events.Paste, as a terminal sends it)."""
    text: str


Item = Union[str, Paste]
Enter = Callable[[str], list]  # how text gets into the focused input


def keystrokes(text: str) -> list[str]:
    """Pilot key names that type `text` into the focused input one key at a time."""
    names = {" ": "space", "/": "slash", ".": "full_stop", "-": "minus", "_": "underscore", "=": "equals_sign",
             ",": "comma", ":": "colon"}
    return [names.get(ch, ch) for ch in text]


def typed(text: str) -> list[Item]:
    """`text` entered into the focused input as one paste of all but its last character, then that character as a key.

    The last key keeps the screen what typing shows: Textual scrolls an input to its cursor before a paste's new
    width is laid out (a paste that fills the field leaves the cursor cell out of view), and the last edit, whose
    rule-fix notes the field shows, is the same one-character change as when typing."""
    return ([Paste(text[:-1])] if len(text) > 1 else []) + keystrokes(text[-1:])


async def play(pilot, sequence: Sequence[Item]) -> None:
    """Press the keys and paste the texts of `sequence` in order, each paste handled before the next key."""
    from textual import events

    keys: list[str] = []
    for item in sequence:
        if isinstance(item, str):
            keys.append(item)
            continue
        await pilot.press(*keys)
        keys = []
        # the driver's route for a terminal's bracketed paste: the app forwards it to the focused widget
        pilot.app._driver.send_message(events.Paste(item.text))
        await pilot.pause()
    await pilot.press(*keys)


def replace_text(text: str, enter: Enter = typed) -> list[Item]:
    """Clear the focused input (Ctrl+U deletes to the start after End) and enter `text`."""
    return ["end", "ctrl+u", *enter(text)]


def start_defaults(template_count: int) -> list[str]:
    """From the start screen: choose "New run · defaults" (listed right after the templates)."""
    return ["down"] * template_count + ["enter"]


# The steps' sequences enter text with `enter`: `typed` (a paste) or `keystrokes` (key by key).
def model_step(model: Path, enter: Enter = typed) -> list[Item]:
    return [*enter(str(model)), "ctrl+n"]


def dataset_step(image_dir: Path, enter: Enter = typed) -> list[Item]:
    # focus: dataset TOML -> image folder -> repeats -> caption ext -> class tokens -> resolution -> batch
    return ["tab", *enter(str(image_dir)), "tab", *replace_text("2", enter), "tab", "tab", *enter("shape"),
            "tab", *replace_text("64", enter), "tab", *replace_text("2", enter), "ctrl+n"]


def network_step(enter: Enter = typed) -> list[Item]:
    # rank -> alpha -> dropout -> conv rank -> conv alpha -> unet only
    return [*replace_text("4", enter), "tab", *replace_text("2", enter), "ctrl+n"]


def learning_step(enter: Enter = typed) -> list[Item]:
    # learning_rate -> unet_lr -> te1 -> te2 -> optimizer (typed, any case: "adamw" is AdamW)
    # -> optimizer_args -> scheduler -> warm-up -> epochs -> steps
    return [*replace_text("0.001", enter), "tab", "tab", "tab", "tab", *replace_text("adamw", enter),
            "tab", "tab", "tab", "tab", "tab", *enter("4"), "ctrl+n"]


def memory_step() -> list[str]:
    # mixed precision (no, fp16, bf16: from bf16 up twice) -> checkpointing (off) -> cache latents
    # -> to disk -> cache text encoder outputs (on: turns on network_train_unet_only)
    return ["enter", "up", "up", "enter", "tab", "space", "tab", "tab", "tab", "space", "ctrl+n"]


def samples_step(output_dir: Path, enter: Enter = typed) -> list[Item]:
    # prompts -> every N steps -> every N epochs -> at first -> sampler -> output dir -> output name
    return [*enter("a red circle --w 64 --h 64 --s 2"), "tab", "tab", "tab", "tab", "tab",
            *replace_text(str(output_dir), enter), "tab", *replace_text("walk_lora", enter), "ctrl+n"]


def draft_before(step: int, model: Path, image_dir: Path, output_dir: Path):
    """The draft (sdxl_tui.wizard_state.WizardState) that "New run · defaults" and the sequences above for steps
    1..step-1 make, built through the same `WizardState.set` calls the fields make (rule fixes included).

    Lets a test open the wizard at `step` with `WizardApp.begin(draft, step)` instead of pressing its way there;
    the walks in test_wizard_pilot.py check at every step that the keys make exactly this draft. Relative paths
    resolve against the working directory, as the wizard's do."""
    from sdxl_tui.wizard_state import DatasetDraft, DatasetSubsetDraft, WizardState

    state = WizardState(source_note="new run from the built-in defaults")
    edits: list[dict] = [
        {"pretrained_model_name_or_path": str(model)},
        {},  # the dataset step builds a dataset draft (below), no option
        {"network_dim": 4, "network_alpha": 2.0},
        {"learning_rate": 0.001, "optimizer_type": "AdamW", "max_train_steps": 4},
        {"mixed_precision": "no", "gradient_checkpointing": False, "cache_text_encoder_outputs": True},
        {"output_dir": str(output_dir), "output_name": "walk_lora"},
    ]
    for number, values in enumerate(edits[:step - 1], start=1):
        for key, value in values.items():
            edit = state.set(key, value)
            assert not edit.error, (key, edit.error)
        if number == 2:
            subset = DatasetSubsetDraft(image_dir=str((Path.cwd() / image_dir).resolve()), num_repeats=2,
                                        class_tokens="shape", caption_extension=".txt")
            state.dataset_draft = DatasetDraft(subsets=(subset,), resolution=64, batch_size=2)
        if number == 6:
            state.prompts_text = "a red circle --w 64 --h 64 --s 2"
    return state
