"""kohya_ss GUI JSON -> RunConfig: the GUI mapping (kohya_gui) feeding the args converter (kohya_import).

Nothing is dropped silently: every GUI key has a note, every sd-scripts option it becomes has the
converter's note (shown as `--option`), and an option whose value would change what trains but
that sdxl-tui cannot honour is refused by name (ConfigError, exit 78) before any model loads,
naming the GUI key it came from. Files the GUI keeps inline (the sample prompt text) or implies
(a folder-style dataset, the accelerate settings) are written beside the output config.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from engine.errors import ConfigError
from engine.interop.kohya_arg_keys import KeyNote
from engine.interop.kohya_gui import GuiArgs, gui_to_sd_args, read_gui_json
from engine.interop.kohya_import import ImportResult, changes_training, convert_kohya_args, place_dataset

_PATH_KEYS = ("pretrained_model_name_or_path", "train_data_dir", "reg_data_dir", "dataset_config", "vae",
              "network_weights", "in_json", "output_dir", "logging_dir")


def _refuse_network_args(ga: GuiArgs, lora_type: str) -> None:
    """A network module the run config does not take is refused by LoRA_type (never trained as
    plain LoRA); networks.lora here reads only the network_args keys the rules know."""
    from pydantic import ValidationError

    from engine.config.learning_sections import NetworkSection

    module = ga.args.get("network_module", "networks.lora")
    try:
        NetworkSection.model_validate({"network_module": module})
    except ValidationError:
        raise ConfigError(f"GUI key LoRA_type = {lora_type!r} needs network_module {module} "
                          f"({' '.join(ga.args.get('network_args', []))}), which sdxl-tui does not train",
                          key="LoRA_type", hint="choose LoRA_type Standard or Kohya LoCon, or train this config in "
                          "sd-scripts") from None



def _refuse_network_errors(result: ImportResult, lora_type: str) -> None:
    """The run config's own network checks (values, LyCORIS keys), at import rather than at train."""
    from engine.config.rules import ERROR, check_rules

    for issue in check_rules(result.config):
        if issue.level == ERROR and {"network_args", "network_module"} & set(issue.keys):
            raise ConfigError(f"GUI key LoRA_type = {lora_type!r}: {issue.message}", key="LoRA_type",
                              hint="change the LyCORIS / network values in the GUI, or train this config in sd-scripts")


def _refuse_dropped(ga: GuiArgs, notes: list[KeyNote]) -> None:
    dropped = [n for n in notes if changes_training(n)]
    if dropped:
        # kohya_ss only passes sd-scripts options, so "unknown" here means "not implemented in sdxl-tui".
        lines = "; ".join(f"{n.key} (GUI key {ga.source.get(n.key, n.key)}): " + (
            "an sd-scripts option sdxl-tui does not implement" if n.detail.startswith("not an option sdxl-tui knows")
            else n.detail) for n in dropped)
        raise ConfigError(f"this kohya_ss config sets options sdxl-tui cannot train as sd-scripts would: {lines}",
                          key=dropped[0].key, hint="change those values in the GUI (or the JSON), or train this "
                          "config in sd-scripts")


def convert_kohya_gui(gui: Mapping[str, Any], *, dataset_config: Optional[str] = None,
                      base_dir: Optional[Path] = None) -> tuple[ImportResult, GuiArgs]:
    """A parsed GUI JSON -> (ImportResult, the sd-scripts options it became). Writes nothing.

    Raises ConfigError for a key refused by name (see the module docstring).
    """
    extras = gui.get("sdxl_tui") or {}  # written by export-kohya --gui; the GUI ignores it
    gui = {k: v for k, v in gui.items() if k != "sdxl_tui"}
    if dataset_config:
        gui = {**gui, "dataset_config": dataset_config}  # as if chosen in the GUI: kohya_ss then counts no folder
    ga = gui_to_sd_args(gui)
    args = {k: v for k, v in ga.args.items() if k != "sample_prompts_text"}
    _refuse_network_args(ga, str(gui.get("LoRA_type", "Standard")))
    try:
        result = convert_kohya_args(args, dataset_config=dataset_config, base_dir=base_dir)
    except ConfigError as exc:
        raise ConfigError(f"GUI key {ga.source.get(exc.key, exc.key)}: {exc.message}", key=exc.key,
                          hint="change this value in the GUI (or the JSON)") from None
    _refuse_dropped(ga, result.notes)
    _refuse_network_errors(result, str(gui.get("LoRA_type", "Standard")))
    converted = [KeyNote(n.key if n.key.startswith("-") else f"--{n.key}", n.status, n.detail) for n in result.notes]
    result.notes = ga.notes + converted
    if extras:
        result.config = result.config.with_values(**extras)
        result.notes.append(KeyNote("sdxl_tui", "mapped", f"sdxl-tui only options: {extras}"))
    return result, ga


def _launch_messages(ga: GuiArgs, mixed_precision: str, config_path: Optional[Path]) -> list[str]:
    """kohya_ss' accelerate settings -> our accelerate config (written when more than one process)."""
    from engine.interop.accelerate_config import accelerate_launch_line, write_accelerate_config

    launch = ga.launch
    processes = int(float(launch.get("num_processes") or 1))
    machines = int(float(launch.get("num_machines") or 1))
    if machines > 1:
        raise ConfigError(f"num_machines = {machines}: kohya_ss' GUI config has no main_process_ip for the other "
                          "machines", key="num_machines",
                          hint="set up several machines in the wizard's GPU step (it writes the accelerate config)")
    gpu_ids = str(launch.get("gpu_ids") or "").strip() or "all"
    lines = [f"accelerate: {processes} process(es), gpu_ids {gpu_ids} (num_cpu_threads_per_process, dynamo_* and "
             "multi_gpu do not change the LoRA; multi_gpu follows num_processes)"]
    if processes > 1:
        if config_path is None:
            raise ConfigError(f"num_processes = {processes}: an accelerate config must be written",
                              hint="import-kohya writes it beside -o")
        written = write_accelerate_config(config_path, processes, mixed_precision, gpu_ids=gpu_ids)
        lines.append(f"wrote {written}; launch with: {accelerate_launch_line(written, processes)}")
    elif gpu_ids != "all":
        lines.append(f"one process: run it on GPU {gpu_ids} with CUDA_VISIBLE_DEVICES={gpu_ids} sdxl-tui train ...")
    return lines


def import_kohya_gui(path: str | Path, *, dataset_config: Optional[str] = None,
                     side_path: Optional[str | Path] = None,
                     paths: Optional[Mapping[str, str]] = None) -> ImportResult:
    """Read a GUI JSON; write what it implies beside `side_path` (e.g. run.toml -> run.dataset.toml,
    run.sample_prompts.txt, run.accelerate.yaml) and point the config at them. `paths` fills or
    replaces the GUI's path keys (pretrained_model_name_or_path, train_data_dir, reg_data_dir,
    output_dir), as if chosen in the GUI before saving (a preset has none)."""
    p = Path(path).expanduser().resolve()
    gui = read_gui_json(p)
    gui.update({k: v for k, v in (paths or {}).items() if v})
    for key in _PATH_KEYS:  # the GUI saves what was typed; a relative path is read from the JSON's folder
        raw = gui.get(key)
        if isinstance(raw, str) and raw and not Path(raw).expanduser().is_absolute() and (p.parent / raw).exists():
            gui[key] = str((p.parent / raw).resolve())
    result, ga = convert_kohya_gui(gui, dataset_config=dataset_config, base_dir=p.parent)
    side = Path(side_path) if side_path is not None else None
    stem = side.with_suffix("") if side is not None else None
    result = place_dataset(result, stem.with_name(stem.name + ".dataset.toml") if stem else None)
    text = ga.args.get("sample_prompts_text")
    if text:
        if stem is None:
            raise ConfigError("sample_prompts holds prompt text: a prompt file must be written",
                              hint="import-kohya writes it beside -o")
        from engine.storage.atomic import atomic_write_text

        prompts = atomic_write_text(stem.with_name(stem.name + ".sample_prompts.txt"), text)
        result.config = result.config.with_values(sample_prompts=str(prompts.resolve()))
        result.messages.append(f"wrote {prompts}: the GUI's sample prompts")
    yaml = stem.with_name(stem.name + ".accelerate.yaml") if stem else None
    result.messages += _launch_messages(ga, result.config.precision.mixed_precision, yaml)
    return result
