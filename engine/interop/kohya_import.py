"""sd-scripts `--config_file` args TOML -> RunConfig, with a note for every key.

sd-scripts' rules, followed here: table names are decoration (every table is flattened one
level into one namespace); keys are option names (ours are the same names, so most map 1:1);
there is no unknown-key check there, so every key is reported here as mapped, renamed,
converted, moved to the dataset TOML, or not used. Options sd-scripts takes on the command
line as dataset defaults (resolution, caption_extension, ...) sit beneath the dataset TOML's
[general] table, so they are merged into a copy of it where [general] lacks them.
Keys the args file does not set take sd-scripts' defaults where ours differ.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from engine.config.key_value import pair_key
from engine.config.schema import PATH_KEYS, RunConfig, option_index
from engine.errors import ConfigError
from engine.interop.kohya_dataset import place_dataset_values
from engine.interop.kohya_toml import absolutise_paths, choose_reading, flatten_args, read_toml


# sd-scripts' defaults where they differ from ours (applied when the args file leaves the key out).
SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "network_dim": 4, "network_alpha": 1.0, "optimizer_type": "AdamW", "learning_rate": 2e-6,
    "mixed_precision": "no", "gradient_checkpointing": False, "cache_latents": False, "save_precision": "fp32",
    "output_name": "last", "sample_sampler": "ddim",
}
SD_SCRIPTS_MAX_TRAIN_STEPS = 1600  # when neither steps nor epochs are given

_SAMPLERS = {"k_euler": "euler", "k_euler_a": "euler_a", "k_dpm_2_a": "dpm_2_a", "k_lms": "lms",
             "dpm_2": "k_dpm_2"}
_SAVE_PRECISION = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}

# sd-scripts options with no effect on what is learned, or handled automatically here.
_HARMLESS = {
    "xformers": "attention always runs through PyTorch's scaled_dot_product_attention (diffusers' AttnProcessor2_0), which picks a flash or memory-efficient kernel itself; the same maths as xformers",
    "sdpa": "PyTorch's scaled_dot_product_attention is always used (diffusers' AttnProcessor2_0)",
    "mem_eff_attn": "PyTorch's scaled_dot_product_attention is always used; it picks a memory-efficient kernel itself",
    "persistent_data_loader_workers": "only keeps DataLoader workers alive between epochs (start-up time); images come from per-sample seeded generators, so the batches are the same",
    "lowram": "only where weights sit while loading (sd-scripts loads to the GPU first); the trained LoRA is the same",
    "highvram": "only skips emptying the CUDA cache after caching latents (speed); the trained LoRA is the same",
    "disable_mmap_load_safetensors": "only how the model file is read (a WSL speed setting); the same tensors are loaded",
    "skip_cache_check": "caches are always checked here; a check can only catch a stale cache, never change a fresh one",
    "console_log_level": "not used", "console_log_file": "not used", "console_log_simple": "not used",
    "output_config": "not used", "config_file": "not used",
    "ddp_timeout": "not used", "ddp_gradient_as_bucket_view": "not used", "ddp_static_graph": "not used",
    "use_safetensors": "always safetensors",
    "zero_stage": "only used with deepspeed (refused)",
    "offload_optimizer_device": "only used with deepspeed (refused)",
    "offload_optimizer_nvme_path": "only used with deepspeed (refused)",
    "offload_param_device": "only used with deepspeed (refused)",
    "offload_param_nvme_path": "only used with deepspeed (refused)",
    "zero3_init_flag": "only used with deepspeed (refused)",
    "zero3_save_16bit_model": "only used with deepspeed (refused)",
    "fp16_master_weights_and_gradients": "only used with deepspeed (refused)",
}
# sd-scripts options refused by name when set (ConfigError before anything loads): option -> (off values, why).
_REFUSED = {
    "wandb_api_key": ((None, ""), "a key in a config file would be copied into config.toml and the LoRA's metadata; set the environment variable WANDB_API_KEY (wandb reads it) or run `wandb login`"),
    "deepspeed": ((None, False), "DeepSpeed is not used: a LoRA's trainable weights and optimizer state are a few MB, so ZeRO's sharding saves almost nothing while its engine takes over precision and gradients; plain DDP (several processes via `accelerate launch` or torchrun) is the faster choice for LoRA"),
    "huggingface_repo_id": ((None, ""), "uploading to the Hugging Face Hub is not done by sdxl-tui (it cannot be tested offline here); upload the finished LoRA with `huggingface-cli upload REPO OUTPUT_DIR`"),
    "huggingface_repo_type": ((None, ""), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "huggingface_path_in_repo": ((None, ""), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "huggingface_token": ((None, ""), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "huggingface_repo_visibility": ((None, ""), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "save_state_to_huggingface": ((None, False), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "resume_from_huggingface": ((None, False), "resuming from the Hub is not done by sdxl-tui; download the state and use `sdxl-tui resume`"),
    "async_upload": ((None, False), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "cpu_offload_checkpointing": ((None, False), "offloading checkpointed activations to the CPU is not implemented (diffusers' SDXL UNet has no such switch)"),
}
# sd-scripts options that change training and have no equivalent here: reported when not "off"
# (every one of them is implemented or refused by name today).
_UNSUPPORTED_OFF: dict[str, tuple] = {}

# Options sdxl-tui takes under their names but refuses (engine/config/rules.py) when set to these.
_REFUSED_UNLESS = {
    "masked_loss": (False, None),
    "max_token_length": (None, 75, 150, 225),
    "alpha_mask": (False, None),
    "conditioning_data_dir": (None, ""),
    "network_multiplier": (None, 1.0),
}


@dataclass(frozen=True)
class KeyNote:
    key: str
    status: str  # mapped / renamed / converted / dataset / not used / refused
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.status:9} {self.key}" + (f": {self.detail}" if self.detail else "")


@dataclass
class ImportResult:
    config: RunConfig
    notes: list[KeyNote] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    dataset_defaults: dict[str, Any] = field(default_factory=dict)  # for the dataset TOML's [general]
    folders: dict[str, str] = field(default_factory=dict)  # folder-style dataset: train_data_dir, reg_data_dir, in_json

    def lines(self) -> list[str]:
        return [str(n) for n in self.notes] + self.messages


# "not used" notes that are no loss: off values, and sd-scripts' own precedence.
_NOT_USED_IS_FINE = ("off", "unset", "off (the dataset default)")
_NOT_USED_BY_DESIGN = {"max_train_steps", "sample_sampler", "train_data_dir", "reg_data_dir", "in_json"}


def changes_training(note: KeyNote) -> bool:
    """True for a note saying a set option was dropped although it changes what trains (the
    kohya_ss GUI import refuses those by name)."""
    if note.status != "not used" or note.key in _HARMLESS or note.key in _NOT_USED_BY_DESIGN:
        return False
    return note.detail not in _NOT_USED_IS_FINE and not note.detail.startswith("not in the file")


def is_kohya_args(doc: Mapping[str, Any]) -> bool:
    """True for a file that is, or may be, an sd-scripts args TOML, recognised by its keys
    (kohya_toml.choose_reading); `import-kohya` converts both, noting the keys it does not know."""
    return choose_reading(doc, known_args_keys()).kind != "ours"


def known_args_keys() -> set[str]:
    """Every key the args import recognises: mapped, converted, a dataset default, or named as unused."""
    handlers = {name[len("_key_"):] for name in dir(_Converter) if name.startswith("_key_")}
    return set(option_index()) | set(_HARMLESS) | set(_REFUSED) | _dataset_level_keys() | handlers


def _dataset_level_keys() -> set[str]:
    from engine.data.dataset_keys import GENERAL_VALID

    return set(GENERAL_VALID) - {"batch_size"}


def _resolution(value: Any) -> Any:
    if isinstance(value, str):
        parts = [int(p) for p in re.split(r"[,x ]+", value.strip()) if p]
        return parts[0] if len(parts) == 1 else parts[:2]
    return value


def _pair(value: Any) -> Any:
    if isinstance(value, str):
        return [float(p) for p in value.split(",")]
    return value


class _Converter:
    """One pass over the flattened keys; collects values for RunConfig and notes."""

    def __init__(self, base_dir: Path) -> None:
        self.index = option_index()
        self.dataset_keys = _dataset_level_keys()
        self.base_dir = base_dir
        self.values: dict[str, Any] = {}
        self.notes: list[KeyNote] = []
        self.dataset_defaults: dict[str, Any] = {}
        self.train_data_dir: Optional[str] = None
        self.folders: dict[str, str] = {}  # train_data_dir / reg_data_dir / in_json, paths resolved
        self.flat: dict[str, Any] = {}
        self.refused: list[str] = []  # options set that sdxl-tui refuses (ConfigError after the pass)

    def note(self, key: str, status: str, detail: str = "") -> None:
        if status in ("mapped", "dataset") and key in self.flat and self.flat[key] not in _REFUSED_UNLESS.get(
                key, (self.flat[key],)):
            status, detail = "refused", (f"= {self.flat[key]!r} is not supported by sdxl-tui yet: plan and train "
                                         "stop with a config error naming it until it is removed")
        self.notes.append(KeyNote(key, status, detail))

    def run(self, flat: Mapping[str, Any]) -> None:
        self.flat = dict(flat)
        for key, value in flat.items():
            handler = getattr(self, f"_key_{key}", None)
            if handler is not None:
                handler(value)
            elif key in self.index:
                self._direct(key, value)
            elif key in self.dataset_keys:
                self._dataset(key, value)
            else:
                self._unknown(key, value)

    def _direct(self, key: str, value: Any) -> None:
        if key in PATH_KEYS and isinstance(value, str) and value:
            p = Path(value).expanduser()
            if not p.is_absolute() and (self.base_dir / p).exists():
                value = str((self.base_dir / p).resolve())
                self.values[key] = value
                self.note(key, "converted", f"relative path resolved as sd-scripts does (from {self.base_dir})")
                return
        if value is None:
            self.note(key, "mapped", "unset")
            return
        self.values[key] = value
        self.note(key, "mapped")

    def _dataset(self, key: str, value: Any) -> None:
        if value is None or (value is False and key != "enable_bucket"):
            self.note(key, "mapped", "off (the dataset default)")
            return
        if key == "resolution":
            value = _resolution(value)
        if key == "face_crop_aug_range":
            value = _pair(value)
        self.dataset_defaults[key] = value
        self.note(key, "dataset", "a dataset default: goes into the dataset TOML's [general] table")

    def _unknown(self, key: str, value: Any) -> None:
        if key in _REFUSED:
            off, why = _REFUSED[key]
            if value in off:
                self.note(key, "not used", "off")
            else:
                self.note(key, "refused", why)
                self.refused.append(f"{key} = {value!r}: {why}")
        elif key in _UNSUPPORTED_OFF:
            if value in _UNSUPPORTED_OFF[key]:
                self.note(key, "not used", "off")
            else:
                self.note(key, "not used", f"= {value!r} changes training but sdxl-tui has no equivalent; the run will differ")
        elif key in _HARMLESS:
            self.note(key, "not used", _HARMLESS[key])
        else:
            from engine.config.names import nearest

            guess = nearest(key, list(self.index) + sorted(self.dataset_keys))
            hint = f"; {guess}" if guess.startswith("did you mean") else ""
            self.note(key, "not used", f"not an option sdxl-tui knows (sd-scripts silently ignores it too){hint}")

    # --- keys that need more than a 1:1 copy ------------------------------------------
    def _key_text_encoder_lr(self, value: Any) -> None:
        if value is None or value == []:
            self.note("text_encoder_lr", "mapped", "unset")
            return
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        lr1, lr2 = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
        self.values["text_encoder_lr1"], self.values["text_encoder_lr2"] = lr1, lr2
        detail = "one rate for both encoders" if len(values) == 1 else \
            "two rates; note sd-scripts' networks.lora applies only the first to both encoders"
        self.note("text_encoder_lr", "renamed", f"-> text_encoder_lr1 = {lr1}, text_encoder_lr2 = {lr2} ({detail})")

    def _key_lr_warmup_steps(self, value: Any) -> None:
        self._steps_or_ratio("lr_warmup_steps", value)

    def _key_lr_decay_steps(self, value: Any) -> None:
        self._steps_or_ratio("lr_decay_steps", value)

    def _steps_or_ratio(self, key: str, value: Any) -> None:
        """sd-scripts reads a float from the args file as a ratio of the total steps, an int as a count."""
        if isinstance(value, float) and value >= 1:
            raise ConfigError(f"{key} = {value} is a float, which sd-scripts reads as a ratio of the total steps "
                              f"({value:g} x the whole run)", key=key,
                              hint=f"write {int(value)} for {int(value)} steps, or a ratio below 1 such as 0.1")
        self.values[key] = value
        self.note(key, "mapped", f"{value} is a ratio of the total steps" if isinstance(value, float) and value else "")

    def _key_optimizer_type(self, value: Any) -> None:
        from engine.interop.optimizer_import import import_optimizer_name

        name, detail = import_optimizer_name(value)
        self.values["optimizer_type"] = name
        self.note("optimizer_type", "mapped" if name == value else "converted", detail)

    def _key_use_8bit_adam(self, value: Any) -> None:
        if value:
            self.values.setdefault("optimizer_type", "AdamW8bit")
            self.note("use_8bit_adam", "renamed", "-> optimizer_type = AdamW8bit")
        else:
            self.note("use_8bit_adam", "not used", "off")

    def _key_use_lion_optimizer(self, value: Any) -> None:
        if value:
            self.values.setdefault("optimizer_type", "Lion")
            self.note("use_lion_optimizer", "renamed", "-> optimizer_type = Lion")
        else:
            self.note("use_lion_optimizer", "not used", "off")

    def _key_save_precision(self, value: Any) -> None:
        if value is None:
            self.note("save_precision", "mapped", "unset (sd-scripts then saves fp32)")
            return
        self.values["save_precision"] = _SAVE_PRECISION.get(str(value), value)
        self.note("save_precision", "converted" if value == "float" else "mapped", "-> fp32" if value == "float" else "")

    def _key_save_model_as(self, value: Any) -> None:
        if value in (None, "safetensors"):
            self.note("save_model_as", "mapped")
        else:
            self.note("save_model_as", "converted", f"{value!r} -> safetensors (pickle-based formats are not written)")

    def _key_sample_sampler(self, value: Any) -> None:
        from engine.config.schema import SamplingSection

        allowed = SamplingSection.model_fields["sample_sampler"].annotation.__args__
        name = _SAMPLERS.get(value, value)
        if name in allowed:
            self.values["sample_sampler"] = name
            self.note("sample_sampler", "mapped" if name == value else "converted", "" if name == value else f"-> {name}")
        else:
            self.note("sample_sampler", "not used", f"{value!r} is not available; using euler_a")
            self.values["sample_sampler"] = "euler_a"

    def _key_log_with(self, value: Any) -> None:
        self._direct("log_with", value or "")

    def _key_dynamo_backend(self, value: Any) -> None:
        # sd-scripts passes dynamo_backend to accelerate only with torch_compile; ours compiles with inductor
        if value in (None, "", "inductor", "no", "NO"):
            self.note("dynamo_backend", "mapped", "torch_compile compiles with the inductor backend")
        else:
            why = f"torch_compile compiles with the inductor backend only; {value!r} cannot be chosen"
            self.note("dynamo_backend", "refused", why)
            self.refused.append(f"dynamo_backend = {value!r}: {why}")

    def _key_network_module(self, value: Any) -> None:
        from engine.config.network_args import NETWORK_MODULES

        if value is None:
            self.note("network_module", "mapped", "unset: networks.lora")
        elif value in NETWORK_MODULES:
            self.values["network_module"] = value
            self.note("network_module", "mapped")
        else:
            raise ConfigError(f"network_module {value!r} is not supported", key="network_module",
                              hint=f"use one of {', '.join(NETWORK_MODULES)}")

    def _key_network_args(self, value: Any) -> None:
        args = list(value or [])
        keys = {pair_key(a) for a in args}
        if "conv_dim" in keys and "conv_alpha" not in keys:
            args.append("conv_alpha=1")
            self.note("network_args", "converted", "conv_alpha=1 added (sd-scripts' default when only conv_dim is given)")
        else:
            self.note("network_args", "mapped")
        self.values["network_args"] = args

    # Folder-style dataset (no dataset TOML): recorded here, built by engine/interop/kohya_dataset.py.
    def _folder_key(self, key: str, value: Any, what: str) -> None:
        if not value:
            self.note(key, "not used", "unset")
            return
        p = Path(str(value)).expanduser()
        if not p.is_absolute() and (self.base_dir / p).exists():
            p = (self.base_dir / p).resolve()
        self.folders[key] = str(p)
        self.note(key, "dataset", f"{what} (sd-scripts ignores it when a dataset TOML is given)")

    def _key_face_crop_aug_range(self, value: Any) -> None:
        if value is None:
            self.note("face_crop_aug_range", "mapped", "off (the default)")
            return
        self.dataset_defaults["face_crop_aug_range"] = _pair(value)
        self.note("face_crop_aug_range", "refused", f"= {value!r}: face-centred crops are not supported by "
                  "sdxl-tui; training stops with a config error naming it until it is removed")

    def _key_train_data_dir(self, value: Any) -> None:
        self._folder_key("train_data_dir", value, "folder-style dataset: one subset per <repeats>_<class tokens> subfolder")
        self.train_data_dir = self.folders.get("train_data_dir")

    def _key_reg_data_dir(self, value: Any) -> None:
        self._folder_key("reg_data_dir", value, "regularisation subsets (is_reg) from its <repeats>_<class tokens> subfolders")

    def _key_in_json(self, value: Any) -> None:
        self._folder_key("in_json", value, "fine-tuning form: captions from this metadata file for train_data_dir")


def _finish(values: dict[str, Any], notes: list[KeyNote]) -> None:
    """sd-scripts' defaults for keys the file leaves out, and its steps/epochs precedence."""
    for key, default in SD_SCRIPTS_DEFAULTS.items():
        if key not in values:
            values[key] = default
            notes.append(KeyNote(key, "converted", f"not in the file: sd-scripts' default {default!r}"))
    if values.get("max_train_epochs") is not None and values.get("max_train_steps") is not None:
        values.pop("max_train_steps")
        notes.append(KeyNote("max_train_steps", "not used", "max_train_epochs is set, and in sd-scripts epochs win"))
    elif values.get("max_train_epochs") is None and values.get("max_train_steps") is None:
        values["max_train_steps"] = SD_SCRIPTS_MAX_TRAIN_STEPS
        notes.append(KeyNote("max_train_steps", "converted", f"not in the file: sd-scripts' default {SD_SCRIPTS_MAX_TRAIN_STEPS}"))
    if values.get("seed") is None:
        values["seed"] = 42
        notes.append(KeyNote("seed", "converted", "unset: sd-scripts picks a random seed each run; sdxl-tui uses 42"))


def convert_kohya_args(doc: Mapping[str, Any], *, dataset_config: Optional[str] = None,
                       base_dir: Optional[Path] = None) -> ImportResult:
    """An args TOML (parsed) -> RunConfig plus a note for every key. Writes nothing."""
    from pydantic import ValidationError

    from engine.config.schema import locate

    conv = _Converter(Path(base_dir) if base_dir else Path.cwd())
    conv.run(flatten_args(doc))
    if conv.refused:
        raise ConfigError("the args file sets options sdxl-tui refuses:\n" + "\n".join(f"  - {r}" for r in conv.refused),
                          key=conv.refused[0].split(" ", 1)[0], hint="remove them (or set them off) and try again")
    if dataset_config:
        conv.values["dataset_config"] = dataset_config
        conv.note("--dataset-config", "mapped", f"dataset_config = {dataset_config}")
    _finish(conv.values, conv.notes)
    data: dict[str, dict[str, Any]] = {}
    for key, value in conv.values.items():
        section, name = locate(key)
        data.setdefault(section, {})[name] = value
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})",
                          key=str(first["loc"][-1]), hint="fix this value in the sd-scripts args file") from None
    result = ImportResult(cfg, conv.notes, dataset_defaults=conv.dataset_defaults, folders=conv.folders)
    if not cfg.dataset.dataset_config:
        result.messages.append("folder-style dataset: a dataset TOML is built from train_data_dir's subfolders"
                               if conv.train_data_dir else
                               "no dataset: pass the sd-scripts dataset TOML with --dataset-config")
    return result




def merge_dataset_defaults(dataset_toml: str | Path, defaults: Mapping[str, Any], out_path: str | Path) -> Path:
    """Copy of a dataset TOML with `defaults` added to [general] where absent (command-line
    values sit below [general] in sd-scripts) and relative image paths made absolute."""
    import tomlkit

    from engine.storage.atomic import atomic_write_text

    src = Path(dataset_toml)
    from engine.config.toml_text import parse_toml, read_config_text

    doc = parse_toml(read_config_text(src, "dataset config"), str(src))
    general = doc.get("general")
    if general is None:
        general = tomlkit.table()
        doc.add("general", general)
    for key, value in defaults.items():
        if key not in general:
            general[key] = value
    absolutise_paths(doc, src.resolve().parent)
    return atomic_write_text(Path(out_path), tomlkit.dumps(doc))




def import_kohya(args_path: str | Path, *, dataset_config: Optional[str] = None,
                 merged_dataset_path: Optional[str | Path] = None) -> ImportResult:
    """Read an args TOML. When it carries dataset defaults and a dataset TOML exists, the merged
    dataset TOML is written to `merged_dataset_path`; for a folder-style dataset (train_data_dir
    without a dataset TOML) the dataset TOML sd-scripts would build is written there."""
    result = convert_kohya_args(read_toml(args_path), dataset_config=dataset_config,
                                base_dir=Path(args_path).expanduser().resolve().parent)
    return place_dataset(result, merged_dataset_path)


def place_dataset(result: ImportResult, merged_dataset_path: Optional[str | Path]) -> ImportResult:
    """Point the config at the dataset TOML to train from (see kohya_dataset.place_dataset_values)."""
    cfg, messages = place_dataset_values(result.config, result.dataset_defaults, result.folders, merged_dataset_path,
                                         merge_dataset_defaults)
    result.config = cfg
    result.messages = [m for m in result.messages if not m.startswith("folder-style dataset:")] + messages
    return result


def load_any_config(path: str | Path) -> tuple[RunConfig, list[str]]:
    """Our run config as is, or an sd-scripts args TOML converted (notes say what happened)."""
    from engine.config.toml_file import load_config

    doc = read_toml(path)
    reading = choose_reading(doc, known_args_keys())
    if reading.kind == "neither":
        raise ConfigError(f"cannot tell what kind of config this is: {reading.why}", path=str(path),
                          hint="sdxl-tui configs start with schema_version; for an sd-scripts args file fix the "
                               f"names above or convert it with `sdxl-tui import-kohya {path}`")
    if reading.kind == "ours":
        return load_config(path), []
    result = convert_kohya_args(doc, base_dir=Path(path).expanduser().resolve().parent)
    if not result.config.dataset.dataset_config and not result.folders.get("train_data_dir"):
        raise ConfigError(f"{path} is an sd-scripts args file without a dataset_config or train_data_dir",
                          path=str(path), hint=result.messages[-1] if result.messages else "add dataset_config")
    result = place_dataset(result, Path(result.config.saving.output_dir) / "kohya_dataset.toml")
    return result.config, [f"{path} is an sd-scripts args file; converted:"] + result.lines()


