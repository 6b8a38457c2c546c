"""kohya_ss GUI `LoRA_type` (+ its LyCORIS / block keys) -> sd-scripts `network_module` + `network_args`.

The fact is kohya_ss' `kohya_gui/lora_gui.py: train_model` (bmaltais/kohya_ss, 2026): it builds one
space-separated string per LoRA type, then `str(network_args).replace('"', "").split()`. The values
are written as Python formats them (`use_tucker=False`, `factor=-1`), as here, so the list equals
the one kohya_ss puts in its config TOML. Which GUI keys each type reads is in `KEYS_BY_TYPE`; a key a
type does not read is a true no-op for that type (kohya_ss does not pass it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from engine.errors import ConfigError

# Fresh-GUI values for the keys older presets lack (kohya_gui/class_lora_tab.py / lora_gui.py widgets).
NETWORK_GUI_DEFAULTS: dict[str, Any] = {
    "LyCORIS_preset": "full", "conv_dim": 1, "conv_alpha": 1, "use_tucker": False, "use_scalar": False,
    "rank_dropout_scale": False, "constrain": 0.0, "rescaled": False, "train_norm": False, "decompose_both": False,
    "train_on_input": True, "factor": -1, "use_cp": False, "bypass_mode": False, "dora_wd": False, "unit": 1,
    "rank_dropout": 0, "module_dropout": 0,
}
_BLOCK_KEYS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims",
               "block_alphas", "conv_block_dims", "conv_block_alphas")
_LORAPLUS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")

# LyCORIS types: (algo, the "key=GUI key" items in kohya_ss' order). `block_size` reads `unit`,
# `constraint` reads `constrain`.
_LYCO_COMMON = ("preset=LyCORIS_preset", "conv_dim", "conv_alpha")
_LYCORIS: dict[str, tuple[str, tuple[str, ...]]] = {
    "LyCORIS/BOFT": ("boft", _LYCO_COMMON + ("module_dropout", "use_tucker", "rank_dropout", "rank_dropout_scale",
                                             "algo", "train_norm")),
    "LyCORIS/Diag-OFT": ("diag-oft", _LYCO_COMMON + ("module_dropout", "use_tucker", "rank_dropout",
                                                     "rank_dropout_scale", "constraint=constrain", "rescaled", "algo",
                                                     "train_norm")),
    "LyCORIS/DyLoRA": ("dylora", _LYCO_COMMON + ("use_tucker", "block_size=unit", "rank_dropout", "module_dropout",
                                                 "algo", "train_norm")),
    "LyCORIS/GLoRA": ("glora", _LYCO_COMMON + ("use_tucker", "rank_dropout", "module_dropout", "rank_dropout_scale",
                                               "algo", "train_norm")),
    "LyCORIS/iA3": ("ia3", _LYCO_COMMON + ("train_on_input", "algo")),
    "LyCORIS/LoCon": ("locon", _LYCO_COMMON + ("use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout",
                                               "use_tucker", "use_scalar", "rank_dropout_scale", "algo", "train_norm")),
    "LyCORIS/LoHa": ("loha", _LYCO_COMMON + ("use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout",
                                             "use_tucker", "use_scalar", "rank_dropout_scale", "algo", "train_norm")),
    "LyCORIS/LoKr": ("lokr", _LYCO_COMMON + ("use_tucker", "rank_dropout", "bypass_mode", "dora_wd", "module_dropout",
                                             "factor", "use_cp", "use_scalar", "decompose_both", "rank_dropout_scale",
                                             "algo", "train_norm")),
    "LyCORIS/Native Fine-Tuning": ("full", ("preset=LyCORIS_preset", "rank_dropout", "module_dropout",
                                            "rank_dropout_scale", "algo", "train_norm")),
}
_LYCORIS["LoCon"] = _LYCORIS["LyCORIS/LoCon"]  # kohya_ss treats the old "LoCon" type as LyCORIS/LoCon

# Types for other model families (Flux, SD3, ...): sdxl-tui trains SDXL only.
_OTHER_FAMILIES = {"Flux1", "Flux1 OFT", "HunyuanImage-2.1", "Anima", "Lumina"}


@dataclass
class NetworkChoice:
    """What kohya_ss passes for the network, and which GUI keys it read to build it."""
    network_module: str
    network_args: list[str]
    used_keys: set[str] = field(default_factory=set)  # GUI keys this LoRA type reads
    passed_keys: set[str] = field(default_factory=set)  # of those, the ones that reached network_args


def _fmt(value: Any) -> str:
    return str(value)  # as kohya_ss' f-strings write it


def _get(gui: Mapping[str, Any], key: str) -> Any:
    return gui.get(key, NETWORK_GUI_DEFAULTS.get(key, ""))


def _truthy(value: Any) -> bool:
    """kohya_ss' `if value` on a GUI value (0, 0.0, "" and False are left out)."""
    return bool(value) and value != "0"


def _lycoris(gui: Mapping[str, Any], lora_type: str) -> NetworkChoice:
    algo, items = _LYCORIS[lora_type]
    parts, used = [], {"LoRA_type"}
    for item in items:
        name, _, key = item.partition("=")
        key = key or name
        if name == "algo":
            parts.append(f"algo={algo}")
            continue
        used.add(key)
        parts.append(f"{name}={_fmt(_get(gui, key))}")
    return NetworkChoice("lycoris.kohya", " ".join(parts).replace('"', "").split(), used, used - {"LoRA_type"})


def _native_loha_lokr(gui: Mapping[str, Any], is_lokr: bool) -> NetworkChoice:
    """kohya_ss' build_native_loha_lokr_network_args: only non-default values are passed."""
    parts = []
    conv_dim, conv_alpha = _get(gui, "conv_dim"), _get(gui, "conv_alpha")
    if conv_dim not in ("", None) and float(conv_dim) > 0:
        parts.append(f"conv_dim={int(float(conv_dim))}")
        if conv_alpha not in ("", None):
            alpha = float(conv_alpha)
            parts.append(f"conv_alpha={int(alpha) if alpha == int(alpha) else alpha}")
    if _get(gui, "use_tucker"):
        parts.append("use_tucker=True")
    factor = _get(gui, "factor")
    if is_lokr and factor not in ("", None) and int(float(factor)) != -1:
        parts.append(f"factor={int(float(factor))}")
    for key in ("rank_dropout", "module_dropout"):
        value = _get(gui, key)
        if value not in ("", None) and float(value) > 0:
            parts.append(f"{key}={value}")
    used = {"LoRA_type", "conv_dim", "conv_alpha", "use_tucker", "rank_dropout", "module_dropout"}
    passed = {p.partition("=")[0] for p in parts}
    return NetworkChoice("networks.lokr" if is_lokr else "networks.loha", parts,
                         used | ({"factor"} if is_lokr else set()), passed)


def _kohya_lora(gui: Mapping[str, Any], lora_type: str) -> NetworkChoice:
    """Standard, Kohya LoCon, LoRA-FA and Kohya DyLoRA: block keys and dropouts when set."""
    keys = list(_BLOCK_KEYS) + ["rank_dropout", "module_dropout"]
    parts: list[str] = []
    if lora_type == "Kohya LoCon":
        parts += [f"conv_dim={_fmt(_get(gui, 'conv_dim'))}", f"conv_alpha={_fmt(_get(gui, 'conv_alpha'))}"]
    if lora_type == "Kohya DyLoRA":
        keys = ["conv_dim", "conv_alpha"] + keys + ["unit"]
    for key in keys:
        value = _get(gui, key)
        if _truthy(value):
            parts.append(f"{key}={_fmt(value)}")
    module = {"Standard": "networks.lora", "Kohya LoCon": "networks.lora", "LoRA-FA": "networks.lora_fa",
              "Kohya DyLoRA": "networks.dylora"}[lora_type]
    used = {"LoRA_type", *keys} | ({"conv_dim", "conv_alpha"} if lora_type == "Kohya LoCon" else set())
    passed = {p.partition("=")[0] for p in parts}
    return NetworkChoice(module, " ".join(parts).replace('"', "").split(), used, passed)


def network_from_gui(gui: Mapping[str, Any]) -> NetworkChoice:
    """The network kohya_ss passes for this GUI config (LoRA+ ratios appended as it does).

    Raises ConfigError for a LoRA type of another model family or one kohya_ss does not know.
    """
    lora_type = str(gui.get("LoRA_type", "Standard"))
    if lora_type in _LYCORIS:
        choice = _lycoris(gui, lora_type)
    elif lora_type in ("Kohya LoHa", "Kohya LoKr"):
        choice = _native_loha_lokr(gui, lora_type == "Kohya LoKr")
    elif lora_type in ("Standard", "Kohya LoCon", "LoRA-FA", "Kohya DyLoRA"):
        choice = _kohya_lora(gui, lora_type)
    elif lora_type in _OTHER_FAMILIES:
        raise ConfigError(f"LoRA_type = {lora_type!r} trains another model family; sdxl-tui trains SDXL LoRAs",
                          key="LoRA_type",
                          hint="use an SDXL config (LoRA_type Standard, Kohya LoCon or a LyCORIS type)")
    else:
        raise ConfigError(f"LoRA_type = {lora_type!r} is not a kohya_ss LoRA type", key="LoRA_type",
                          hint="use Standard, Kohya LoCon, Kohya DyLoRA, Kohya LoHa, Kohya LoKr or LyCORIS/...")
    for key in _LORAPLUS:
        value = gui.get(key)
        if _truthy(value):
            choice.network_args.append(f"{key}={value}")
            choice.passed_keys.add(key)
    choice.used_keys |= set(_LORAPLUS)
    return choice


def network_keys() -> set[str]:
    """Every GUI key this module reads (for the import's per-key notes)."""
    keys = {"LoRA_type", *NETWORK_GUI_DEFAULTS, *_BLOCK_KEYS, *_LORAPLUS}
    return keys
