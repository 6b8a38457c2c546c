"""One pass over an args file's flattened keys: what each becomes in RunConfig (mapped, renamed,
converted), a dataset default for the dataset TOML's [general], a folder-style dataset folder,
not used, or refused; and a KeyNote saying which, for every key (engine/interop/kohya_import.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from engine.config.key_value import pair_key
from engine.config.schema import PATH_KEYS, option_index
from engine.errors import ConfigError
from engine.interop.kohya_key_tables import (
    HARMLESS,
    REFUSED,
    REFUSED_UNLESS,
    SAMPLERS,
    SAVE_PRECISION,
    UNSUPPORTED_OFF,
)


@dataclass(frozen=True)
class KeyNote:
    """What the import did with one args-file key: `status` (mapped, renamed, converted, dataset,
    not used, refused) and a `detail` for the user; `str()` is the report line.
    """
    key: str
    status: str  # mapped / renamed / converted / dataset / not used / refused
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.status:9} {self.key}" + (f": {self.detail}" if self.detail else "")


def known_args_keys() -> set[str]:
    """Every key the args import recognises: mapped, converted, a dataset default, or named as unused."""
    handlers = {name[len("_key_"):] for name in dir(KeyConverter) if name.startswith("_key_")}
    return set(option_index()) | set(HARMLESS) | set(REFUSED) | _dataset_level_keys() | handlers


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


class KeyConverter:
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
        """Record a KeyNote for `key`; a mapped / dataset key whose value sdxl-tui cannot train with yet
        (REFUSED_UNLESS) is noted as refused instead (RunConfig's rules then stop plan and train on it).
        """
        if status in ("mapped", "dataset") and key in self.flat and self.flat[key] not in REFUSED_UNLESS.get(
                key, (self.flat[key],)):
            status, detail = "refused", (f"= {self.flat[key]!r} is not supported by sdxl-tui yet: plan and train "
                                         "stop with a config error naming it until it is removed")
        self.notes.append(KeyNote(key, status, detail))

    def run(self, flat: Mapping[str, Any]) -> None:
        """Sort every key of `flat` (the args file flattened one level) into values, dataset defaults,
        folders, refusals and notes, as the key's `_key_<name>` handler or its kind says. Raises
        ConfigError where a handler cannot convert a value (a float step count >= 1, an unknown
        network_module); other refusals collect in `refused` for the caller.
        """
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
        if key in REFUSED:
            off, why = REFUSED[key]
            if value in off:
                self.note(key, "not used", "off")
            else:
                self.note(key, "refused", why)
                self.refused.append(f"{key} = {value!r}: {why}")
        elif key in UNSUPPORTED_OFF:
            if value in UNSUPPORTED_OFF[key]:
                self.note(key, "not used", "off")
            else:
                self.note(key, "not used",
                          f"= {value!r} changes training but sdxl-tui has no equivalent; the run will differ")
        elif key in HARMLESS:
            self.note(key, "not used", HARMLESS[key])
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
        self.values["save_precision"] = SAVE_PRECISION.get(str(value), value)
        converted = value == "float"
        self.note("save_precision", "converted" if converted else "mapped", "-> fp32" if converted else "")

    def _key_save_model_as(self, value: Any) -> None:
        if value in (None, "safetensors"):
            self.note("save_model_as", "mapped")
        else:
            self.note("save_model_as", "converted", f"{value!r} -> safetensors (pickle-based formats are not written)")

    def _key_sample_sampler(self, value: Any) -> None:
        from engine.config.schema import SamplingSection

        allowed = SamplingSection.model_fields["sample_sampler"].annotation.__args__
        name = SAMPLERS.get(value, value)
        if name in allowed:
            self.values["sample_sampler"] = name
            same = name == value
            self.note("sample_sampler", "mapped" if same else "converted", "" if same else f"-> {name}")
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
            self.note("network_args", "converted",
                      "conv_alpha=1 added (sd-scripts' default when only conv_dim is given)")
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
        self._folder_key("train_data_dir", value,
                         "folder-style dataset: one subset per <repeats>_<class tokens> subfolder")
        self.train_data_dir = self.folders.get("train_data_dir")

    def _key_reg_data_dir(self, value: Any) -> None:
        self._folder_key("reg_data_dir", value,
                         "regularisation subsets (is_reg) from its <repeats>_<class tokens> subfolders")

    def _key_in_json(self, value: Any) -> None:
        self._folder_key("in_json", value, "fine-tuning form: captions from this metadata file for train_data_dir")
