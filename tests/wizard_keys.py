"""Key sequences shared by the wizard's Pilot and snapshot tests (keyboard only)."""
from __future__ import annotations

from pathlib import Path


def typed(text: str) -> list[str]:
    """Pilot key names that type `text` into the focused input."""
    names = {" ": "space", "/": "slash", ".": "full_stop", "-": "minus", "_": "underscore", "=": "equals_sign",
             ",": "comma", ":": "colon"}
    return [names.get(ch, ch) for ch in text]


def replace_text(text: str) -> list[str]:
    """Clear the focused input (Ctrl+U deletes to the start after End) and type `text`."""
    return ["end", "ctrl+u", *typed(text)]


def start_defaults(template_count: int) -> list[str]:
    """From the start screen: choose "New run · defaults" (listed right after the templates)."""
    return ["down"] * template_count + ["enter"]


def model_step(model: Path) -> list[str]:
    return [*typed(str(model)), "ctrl+n"]


def dataset_step(image_dir: Path) -> list[str]:
    # focus: dataset TOML -> image folder -> repeats -> caption ext -> class tokens -> resolution -> batch
    return ["tab", *typed(str(image_dir)), "tab", *replace_text("2"), "tab", "tab", *typed("shape"),
            "tab", *replace_text("64"), "tab", *replace_text("2"), "ctrl+n"]


def network_step() -> list[str]:
    # rank -> alpha -> dropout -> conv rank -> conv alpha -> unet only
    return [*replace_text("4"), "tab", *replace_text("2"), "ctrl+n"]


def learning_step() -> list[str]:
    # learning_rate -> unet_lr -> te1 -> te2 -> optimizer (typed, any case: "adamw" is AdamW)
    # -> optimizer_args -> scheduler -> warm-up -> epochs -> steps
    return [*replace_text("0.001"), "tab", "tab", "tab", "tab", *replace_text("adamw"),
            "tab", "tab", "tab", "tab", "tab", *typed("4"), "ctrl+n"]


def memory_step() -> list[str]:
    # mixed precision (no, fp16, bf16: from bf16 up twice) -> checkpointing (off) -> cache latents
    # -> to disk -> cache text encoder outputs (on: turns on network_train_unet_only)
    return ["enter", "up", "up", "enter", "tab", "space", "tab", "tab", "tab", "space", "ctrl+n"]


def samples_step(output_dir: Path) -> list[str]:
    # prompts -> every N steps -> every N epochs -> at first -> sampler -> output dir -> output name
    return [*typed("a red circle --w 64 --h 64 --s 2"), "tab", "tab", "tab", "tab", "tab",
            *replace_text(str(output_dir)), "tab", *replace_text("walk_lora"), "ctrl+n"]
