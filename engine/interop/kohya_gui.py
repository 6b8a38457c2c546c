"""kohya_ss GUI JSON (the file its "Save config" writes, and its presets) -> sd-scripts options.

The fact is kohya_ss' `kohya_gui/lora_gui.py: train_model`, which turns the GUI values into the
config TOML it passes to `sdxl_train_network.py --config_file`, then appends `additional_parameters`
and runs it under `accelerate launch`. This module produces the same flat option dict (sd-scripts
names), so `kohya_import.convert_kohya_args` maps it like any args TOML; and a note for every GUI key.
kohya_ss leaves out every value that is "", False, None or 0 (`value not in ["", False, None]`), so
does this module. A key the file lacks takes the fresh GUI's value (`GUI_DEFAULTS`), as when the
GUI loads the file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from engine.errors import ConfigError
from engine.interop.kohya_arg_keys import KeyNote
from engine.interop.kohya_cli_args import parse_additional_parameters, split_words
from engine.interop.kohya_gui_keys import (
    FAMILY_FLAGS,
    FAMILY_KEYS,
    FAMILY_PREFIXES,
    GUI_ONLY,
    HUBER_KEYS,
    LAUNCH_KEYS,
    MULTIRES_NOISE,
    OLD_KEYS,
    ORIGINAL_NOISE,
    SAME_NAME,
    gui_float,
    gui_int,
)
from engine.interop.kohya_gui_network import network_from_gui, network_keys

# kohya_ss' widget values for keys a file may lack, where they differ from sd-scripts' defaults.
GUI_DEFAULTS: dict[str, Any] = {
    "max_train_steps": 1600, "max_bucket_reso": 2048, "min_bucket_reso": 256, "optimizer": "AdamW8bit",
    "text_encoder_lr": 0.0001, "unet_lr": 0.0001, "epoch": 1, "save_model_as": "safetensors",
}


@dataclass
class GuiArgs:
    """sd-scripts options as kohya_ss passes them; which GUI key each came from; notes; launch settings."""
    args: dict[str, Any] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # sd-scripts option -> GUI key
    notes: list[KeyNote] = field(default_factory=list)
    launch: dict[str, Any] = field(default_factory=dict)

    def put(self, option: str, value: Any, gui_key: str) -> None:
        """Set sd-scripts option `option` from GUI key `gui_key`, unless `value` is empty, False, None or 0 (kohya_ss
        leaves those out of the command line too)."""
        if value in ("", False, None) or value == []:  # kohya_ss' filter (0 == False, so 0 too)
            return
        self.args[option] = value
        self.source[option] = gui_key

    def note(self, key: str, status: str, detail: str = "") -> None:
        """Record what happened to GUI key `key` (its status and a detail) for the import report."""
        self.notes.append(KeyNote(key, status, detail))


def is_kohya_gui_json(doc: Any) -> bool:
    """True for a JSON object the kohya_ss GUI saved (its own key names, not sd-scripts')."""
    return isinstance(doc, Mapping) and any(k in doc for k in ("LoRA_type", "max_resolution", "epoch", "optimizer",
                                                               "sdxl_no_half_vae", "additional_parameters"))


def read_gui_json(path: str | Path) -> dict[str, Any]:
    """Raises ConfigError when missing, not JSON, or not a JSON object."""
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"file not found: {p}", path=str(p), hint="check the path")
    try:
        doc = json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"malformed JSON at line {exc.lineno}: {exc.msg}", path=str(p), line=exc.lineno) from None
    if not isinstance(doc, dict):
        raise ConfigError("a kohya_ss GUI config is a JSON object", path=str(p), hint="save it again from the GUI")
    return doc


def folder_steps(train_data_dir: str, reg_data_dir: str, batch: int, accum: int, epoch: int) -> tuple[int, str]:
    """kohya_ss' max_train_steps for a folder dataset: ceil(Σ images×repeats / batch / accum × epoch × reg),
    reg = 2 with a regularisation folder; images are .jpg/.jpeg/.png/.webp files (as kohya_ss counts)."""
    from engine.data.folder_dataset import parse_subfolder_name

    total = 0
    root = Path(train_data_dir).expanduser()
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        parsed = parse_subfolder_name(sub.name)
        if parsed is not None:
            images = sum(1 for f in sub.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
            total += parsed[0] * images
    reg = 2 if reg_data_dir else 1
    steps = int(math.ceil(float(total) / batch / accum * epoch * reg))
    return steps, f"ceil({total} images×repeats / {batch} / {accum} × epoch {epoch} × {reg})"


def _value(gui: Mapping[str, Any], key: str, out: GuiArgs) -> Any:
    if key in gui:
        return gui[key]
    if key in GUI_DEFAULTS:
        out.note(key, "converted", f"not in the file: kohya_ss' GUI value {GUI_DEFAULTS[key]!r}")
        return GUI_DEFAULTS[key]
    return None


def _steps_and_epochs(gui: Mapping[str, Any], out: GuiArgs) -> None:
    """epoch, max_train_steps, max_train_epochs, lr_scheduler_num_cycles, lr_warmup(_steps)."""
    epoch = gui_int(_value(gui, "epoch", out)) or 1
    steps = gui_int(_value(gui, "max_train_steps", out))
    folder = gui.get("train_data_dir") and not gui.get("dataset_config")
    if steps == 0 and gui.get("dataset_config"):
        out.note("epoch", "not used", "with a dataset TOML kohya_ss passes no length for epoch: sd-scripts trains "
                 "max_train_epochs if set, else its default 1600 steps")
    elif steps == 0 and folder:
        steps, formula = folder_steps(str(gui["train_data_dir"]), str(gui.get("reg_data_dir") or ""),
                                      gui_int(gui.get("train_batch_size", 1)) or 1,
                                      gui_int(gui.get("gradient_accumulation_steps", 1)) or 1, epoch)
        out.note("epoch", "converted", f"-> max_train_steps = {steps} = {formula}, as kohya_ss computes it")
    elif steps == 0:
        out.args["max_train_epochs"] = epoch
        out.source["max_train_epochs"] = "epoch"
        out.note("epoch", "converted", f"-> max_train_epochs = {epoch}: max_train_steps is 0 and no dataset is "
                 "given yet (kohya_ss computes the steps from train_data_dir's images × repeats; give the folder "
                 "to get its exact count)")
    else:
        out.note("epoch", "not used",
                 f"max_train_steps = {steps} is set, so kohya_ss does not use epoch for the length")
    out.put("max_train_steps", steps, "max_train_steps")
    out.note("max_train_steps", "mapped" if steps else "not used", "" if steps else "0: not passed")
    cycles = gui.get("lr_scheduler_num_cycles", "")
    out.put("lr_scheduler_num_cycles", gui_int(cycles) if cycles != "" else epoch, "lr_scheduler_num_cycles")
    out.note("lr_scheduler_num_cycles", "converted" if cycles == "" else "mapped",
             f"empty: kohya_ss passes epoch ({epoch})" if cycles == "" else "")
    warmup, warmup_steps = gui_float(gui.get("lr_warmup")), gui_float(gui.get("lr_warmup_steps"))
    resolved: Any = int(warmup_steps) if warmup_steps > 0 else (warmup / 100 if warmup else 0)
    out.put("lr_warmup_steps", resolved, "lr_warmup")
    how = (f"{warmup:g}% -> lr_warmup_steps = {resolved} (a fraction of the total steps)" if warmup and not warmup_steps
           else "lr_warmup_steps wins, as in kohya_ss" if warmup else "0: no warm-up")
    out.note("lr_warmup", "converted" if warmup else "not used", how)
    if "lr_warmup_steps" in gui:
        out.note("lr_warmup_steps", "mapped" if warmup_steps else "not used", "" if warmup_steps else "0: not set")


def _rates(gui: Mapping[str, Any], out: GuiArgs) -> None:
    """learning rates and kohya_ss' train-mode flags (text_encoder_lr 0 -> UNet only)."""
    te, unet, t5 = (gui_float(_value(gui, k, out)) for k in ("text_encoder_lr", "unet_lr", "t5xxl_lr"))
    lr = gui_float(gui.get("learning_rate"))
    if lr == 0 and te == 0 and unet == 0:
        raise ConfigError("learning_rate, unet_lr and text_encoder_lr are all 0", key="learning_rate",
                          hint="set a learning rate (kohya_ss refuses this too)")
    out.put("learning_rate", lr, "learning_rate")
    out.note("learning_rate", "mapped")
    te_list = [te, t5] if te > 0 and t5 > 0 else ([te, te] if te > 0 else [])
    out.put("text_encoder_lr", te_list, "text_encoder_lr")
    out.put("unet_lr", unet, "unet_lr")
    out.put("network_train_unet_only", te == 0 and unet != 0, "text_encoder_lr")
    out.put("network_train_text_encoder_only", te != 0 and unet == 0, "unet_lr")
    mode = "UNet only" if te == 0 and unet != 0 else ("text encoders only" if unet == 0 and te != 0 else "both")
    out.note("text_encoder_lr", "converted", f"-> text_encoder_lr = {te_list or 'unset'}; trains {mode}, as kohya_ss "
             "sets network_train_unet_only / network_train_text_encoder_only from the two rates")
    out.note("unet_lr", "mapped" if unet else "converted", "" if unet else "0: not passed (learning_rate applies)")
    if "t5xxl_lr" in gui:
        out.note("t5xxl_lr", "converted" if te > 0 and t5 > 0 else "not used",
                 "kohya_ss makes it text_encoder_lr's second value" if te > 0 and t5 > 0 else
                 "Flux.1/SD3 T5 rate; 0 or no text_encoder_lr, so kohya_ss does not pass it")


def _noise(gui: Mapping[str, Any], out: GuiArgs) -> None:
    kind = gui.get("noise_offset_type", "Original")
    if kind not in ("Original", "Multires"):
        raise ConfigError(f"noise_offset_type = {kind!r} is not a kohya_ss choice", key="noise_offset_type",
                          hint="use Original or Multires")
    used = ORIGINAL_NOISE if kind == "Original" else MULTIRES_NOISE
    for key in ORIGINAL_NOISE + MULTIRES_NOISE:
        if key not in gui:
            continue
        if key in used:
            out.put(key, gui[key], "noise_offset_type")
            out.note(key, "mapped" if key in out.args else "not used", "" if key in out.args else "0: not passed")
        else:
            out.note(key, "not used", f"noise_offset_type is {kind}: kohya_ss does not pass it")
    out.note("noise_offset_type", "converted", f"{kind}: passes {', '.join(used)}")


def _network(gui: Mapping[str, Any], out: GuiArgs) -> set[str]:
    choice = network_from_gui(gui)
    out.put("network_module", choice.network_module, "LoRA_type")
    out.put("network_args", choice.network_args, "LoRA_type")
    out.note("LoRA_type", "converted", f"{gui.get('LoRA_type', 'Standard')} -> network_module = {choice.network_module}"
             + (f", network_args = {' '.join(choice.network_args)}" if choice.network_args else ""))
    for key in sorted(network_keys() - {"LoRA_type"}):
        if key not in gui:
            continue
        if key in choice.passed_keys:
            out.note(key, "converted", "-> network_args (see LoRA_type)")
        elif key in choice.used_keys:
            out.note(key, "not used", f"{gui[key]!r}: kohya_ss passes it only when set")
        else:
            out.note(key, "not used", f"LoRA_type {gui.get('LoRA_type', 'Standard')} does not read it "
                                      "(kohya_ss passes it for other LoRA types only)")
    return network_keys()


def _optimizer(gui: Mapping[str, Any], out: GuiArgs) -> None:
    name = _value(gui, "optimizer", out)
    out.put("optimizer_type", name, "optimizer")
    out.note("optimizer", "renamed", f"-> optimizer_type = {name}")
    for key in ("optimizer_args", "lr_scheduler_args"):
        if key in gui:
            words = split_words(gui[key])
            out.put(key, words, key)
            out.note(key, "converted" if words else "not used",
                     f"one string -> {words} (quotes removed, split on spaces, as kohya_ss does)" if words else "empty")


def _special(gui: Mapping[str, Any], out: GuiArgs) -> None:
    if not gui.get("sdxl", True):
        raise ConfigError("sdxl = false: this kohya_ss config trains SD 1.x/2.x (train_network.py)", key="sdxl",
                          hint="sdxl-tui trains SDXL LoRAs: tick SDXL in the GUI and save the config again")
    for flag in FAMILY_FLAGS:
        if gui.get(flag):
            raise ConfigError(f"{flag} = true: this config trains another model family, not SDXL", key=flag,
                              hint="sdxl-tui trains SDXL LoRAs only")
        if flag in gui:
            out.note(flag, "not used", "false: SDXL")
    if "max_resolution" in gui:
        out.put("resolution", gui["max_resolution"], "max_resolution")
        out.note("max_resolution", "renamed", f"-> resolution = {gui['max_resolution']!r}")
    for gui_key, option in (("sdxl_no_half_vae", "no_half_vae"), ("sdxl_cache_text_encoder_outputs",
                                                                    "cache_text_encoder_outputs")):
        if gui_key in gui:
            out.put(option, bool(gui[gui_key]), gui_key)
            out.note(gui_key, "renamed" if gui[gui_key] else "not used", f"-> {option}" if gui[gui_key] else "off")
    if "xformers" in gui:
        attention = "xformers" if gui["xformers"] in (True, "xformers") else gui["xformers"]
        out.put("xformers", attention == "xformers", "xformers")
        out.put("sdpa", attention == "sdpa", "xformers")
        out.note("xformers", "converted", f"{gui['xformers']!r} -> " + ("--xformers" if attention == "xformers" else
                                                                       "--sdpa" if attention == "sdpa" else "nothing"))
    if "wandb_run_name" in gui:
        out.put("wandb_run_name", gui["wandb_run_name"] or gui.get("output_name", ""), "wandb_run_name")
        out.note("wandb_run_name", "mapped", "empty: kohya_ss passes output_name")
    if gui.get("sample_prompts"):
        out.args["sample_prompts_text"] = str(gui["sample_prompts"])  # written to a file by the import
        out.source["sample_prompts_text"] = "sample_prompts"
        out.note("sample_prompts", "converted", "the prompt text -> a prompt file, as kohya_ss writes "
                                                "output_dir/sample/prompt.txt")
    elif "sample_prompts" in gui:
        out.note("sample_prompts", "not used", "empty: no sample prompts")


def _launch(gui: Mapping[str, Any], out: GuiArgs) -> None:
    for key in LAUNCH_KEYS:
        if key in gui:
            out.launch[key] = gui[key]
            out.note(key, "converted", "-> the accelerate launch settings (see below)")
    backend = str(gui.get("dynamo_backend") or "no")
    if backend.lower() != "no":
        out.put("torch_compile", True, "dynamo_backend")  # accelerate's dynamo compiles the model: same math
        out.note("dynamo_backend", "converted",
                 f"{backend} -> torch_compile (the UNet is compiled; the LoRA is the same)")
    extra = str(gui.get("extra_accelerate_launch_args") or "").strip()
    if extra:
        raise ConfigError(f"extra_accelerate_launch_args = {extra!r}: sdxl-tui writes the accelerate settings itself",
                          key="extra_accelerate_launch_args",
                          hint="clear it; num_processes / num_machines / gpu_ids / main_process_port are read")


def _simple(gui: Mapping[str, Any], key: str, out: GuiArgs) -> None:
    if key in HUBER_KEYS and str(gui.get("loss_type") or "l2") == "l2":
        out.note(key, "not used", "loss_type is l2, which does not read it (sd-scripts uses it for huber / "
                                  "smooth_l1 only)")
    elif key in FAMILY_KEYS or key.startswith(FAMILY_PREFIXES):
        out.note(key, "not used", "kohya_ss passes it only for Flux.1 / SD3 / HunyuanImage / Anima / Lumina "
                                  "training (their checkbox is off: SDXL)")
    elif key in SAME_NAME:
        cast = SAME_NAME[key]
        value = gui[key]
        value = cast(value) if cast is not None and value not in ("", None) else value
        out.put(key, value, key)
        out.note(key, "mapped" if key in out.args else "not used", "" if key in out.args else
                 f"{gui[key]!r}: kohya_ss does not pass an empty, false or 0 value")
    elif key in GUI_ONLY:
        out.note(key, "not used", GUI_ONLY[key])
    elif key in OLD_KEYS:
        if gui[key] in ("", False, None, 0):
            out.note(key, "not used", "an old kohya_ss key the GUI no longer reads (empty here)")
        elif OLD_KEYS[key] == "network_weights" and not gui.get("network_weights"):
            out.put("network_weights", gui[key], key)
            out.note(key, "renamed", "-> network_weights (its old kohya_ss name)")
        else:
            new = f"; the GUI's key is now {OLD_KEYS[key]}" if OLD_KEYS[key] else ""
            raise ConfigError(f"{key} = {gui[key]!r}: an old kohya_ss key the current GUI no longer reads{new}",
                              key=key, hint=f"clear {key}{' and set ' + OLD_KEYS[key] if OLD_KEYS[key] else ''}")
    elif gui[key] in ("", False, None, 0, []):
        out.note(key, "not used", "empty/off, and not a key kohya_ss' SDXL LoRA tab passes")
    else:
        raise ConfigError(f"{key} = {gui[key]!r}: not a kohya_ss SDXL LoRA key sdxl-tui knows", key=key,
                          hint="remove it, or put the sd-scripts option in additional_parameters")


def _additional(gui: Mapping[str, Any], out: GuiArgs) -> None:
    raw = str(gui.get("additional_parameters") or "")
    parsed = parse_additional_parameters(raw)
    for option, value in parsed.items():
        out.args[option] = value  # argparse reads them after --config_file: they win
        out.source[option] = "additional_parameters"
    if "additional_parameters" in gui:
        out.note("additional_parameters", "converted" if parsed else "not used",
                 ", ".join(f"--{k} -> {k} = {v!r}" for k, v in parsed.items()) if parsed else "empty")


def gui_to_sd_args(gui: Mapping[str, Any]) -> GuiArgs:
    """The sd-scripts options kohya_ss would pass for this GUI config, with a note per GUI key.

    Raises ConfigError for a config that is not SDXL, a key that cannot be passed on, or an
    unparsable additional_parameters.
    """
    out = GuiArgs()
    missing = {k: v for k, v in GUI_DEFAULTS.items() if k in SAME_NAME and k not in gui}
    for key, value in missing.items():  # the fresh GUI's widget value, as when the GUI loads this file
        out.note(key, "converted", f"not in the file: kohya_ss' GUI value {value!r}")
    gui = {**missing, **gui}
    _special(gui, out)
    handled = set(network_keys()) | {"max_resolution", "sdxl_no_half_vae", "sdxl_cache_text_encoder_outputs",
                                     "xformers", "wandb_run_name", "sample_prompts", "additional_parameters",
                                     "noise_offset_type", "optimizer", "optimizer_args", "lr_scheduler_args",
                                     "epoch", "max_train_steps", "lr_scheduler_num_cycles", "lr_warmup",
                                     "lr_warmup_steps", "text_encoder_lr", "unet_lr", "learning_rate",
                                     "t5xxl_lr", "max_data_loader_n_workers", *FAMILY_FLAGS, *ORIGINAL_NOISE,
                                     *MULTIRES_NOISE, *LAUNCH_KEYS}
    _network(gui, out)
    _optimizer(gui, out)
    _steps_and_epochs(gui, out)
    _rates(gui, out)
    _noise(gui, out)
    _launch(gui, out)
    for key in gui:
        if key not in handled:
            _simple(gui, key, out)
    _additional(gui, out)
    if "max_data_loader_n_workers" in gui:
        out.args["max_data_loader_n_workers"] = gui_int(gui["max_data_loader_n_workers"])  # kohya_ss always passes it
        out.source["max_data_loader_n_workers"] = "max_data_loader_n_workers"
        out.note("max_data_loader_n_workers", "mapped", "passed even when 0, as kohya_ss does")
    return out
