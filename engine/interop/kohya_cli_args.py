"""A raw sd-scripts command-line fragment (kohya_ss' `additional_parameters`) -> option values.

kohya_ss (`common_gui.py: run_cmd_advanced_training`) removes every `"` and splits the string on
whitespace, then appends the words after `--config_file`. sd-scripts' argparse then reads them on
top of the config file (`parser.parse_args(namespace=config_args)`), so they win over the file.
argparse's rules as sd-scripts' options use them: `--name=value`, `--name value`, `--name v1 v2 ...`
for the list options (nargs="*"), a bare `--name` for the store_true flags. Values are typed by the
option they belong to (`engine.config.schema` types, the list options below); other values are
read as int, float, or text, as they would come out of a TOML file.
"""
from __future__ import annotations

from typing import Any

from engine.errors import ConfigError

# sd-scripts options declared with nargs="*" (train_util.py / train_network.py).
LIST_OPTIONS = {"network_args", "optimizer_args", "lr_scheduler_args", "text_encoder_lr", "base_weights",
                "base_weights_multiplier"}
# sd-scripts options that take a single text value even when it looks like a number.
TEXT_OPTIONS = {"output_name", "log_prefix", "training_comment", "metadata_title", "metadata_author",
                "metadata_description", "metadata_license", "metadata_tags", "wandb_run_name", "log_tracker_name",
                "lr_scheduler_type", "optimizer_type", "loss_type", "huber_schedule", "network_module",
                "sample_sampler", "caption_extension", "resolution", "save_precision", "mixed_precision"}


def _scalar(name: str, word: str) -> Any:
    if name in TEXT_OPTIONS:
        return word
    from engine.config.schema import SECTIONS, option_index

    section = option_index().get(name)
    if section is not None and SECTIONS[section].model_fields[name].annotation is str:
        return word
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"  # sd-scripts has no bool-typed value options; a TOML would read it so
    for cast in (int, float):
        try:
            return cast(word)
        except ValueError:
            pass
    return word


def split_words(raw: str) -> list[str]:
    """kohya_ss' split: quotes removed, then whitespace."""
    return str(raw or "").replace('"', "").split()


def parse_additional_parameters(raw: str) -> dict[str, Any]:
    """`'--max_grad_norm=1 --network_train_unet_only --lr_scheduler_args T_max=30 eta_min=0'` ->
    {"max_grad_norm": 1, "network_train_unet_only": True, "lr_scheduler_args": ["T_max=30", "eta_min=0"]}.

    Raises ConfigError for a word that is not an option (argparse: "unrecognized arguments") and
    for several values given to a single-value option.
    """
    out: dict[str, Any] = {}
    words = split_words(raw)
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or word == "--":
            raise ConfigError(f"additional_parameters: {word!r} is not an option (sd-scripts' argparse would stop "
                              "with 'unrecognized arguments')", key="additional_parameters",
                              hint="write options as --name=value or --name value")
        name, eq, inline = word[2:].partition("=")
        name = name.replace("-", "_")
        values: list[str] = [inline] if eq else []
        i += 1
        while not eq and i < len(words) and not words[i].startswith("--"):
            values.append(words[i])
            i += 1
        if name in LIST_OPTIONS:
            out[name] = [_scalar(name, v) if name == "text_encoder_lr" else v for v in values]
        elif not values:
            out[name] = True
        elif len(values) == 1:
            out[name] = _scalar(name, values[0])
        else:
            raise ConfigError(f"additional_parameters: --{name} takes one value, got {' '.join(values)!r}",
                              key="additional_parameters", hint=f"give --{name} a single value")
    return out
