"""`network_module = "lycoris.kohya"`: LyCORIS networks built by the `lycoris-lora` package
(the pip extra `lycoris`), the library sd-scripts users run, on our diffusers SDXL model.

LyCORIS names a module after the module tree it is given. On sd-scripts' own SDXL UNet that
tree is the original (sgm) layout, so its files say `lora_unet_input_blocks_4_1_...`; ours is
diffusers', so the names are translated both ways through `engine.lora.names` (the file keeps
LyCORIS' tensor names: `hada_w1_a`, `lokr_w1`, `lora_down`, `on_input`, `diff`, `dora_scale`, ...).

Targets follow what LyCORIS picks on sd-scripts' SDXL UNet: its preset's target classes
(Transformer2DModel, ResnetBlock2D, Downsample2D, Upsample2D, CLIPAttention, CLIPMLP), while the
preset's diffusers module *names* (conv_in, time_embedding.linear_1, ...) and diffusers' own
TimestepEmbedding class, which have no counterpart in sd-scripts' UNet, are left out.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from engine.errors import ConfigError
from engine.lora.names import part_of, text_encoder_lora_name, unet_lora_name
from engine.model.sdxl_layout import UNetBlockLayout

PARTS = ("unet", "te1", "te2")
NOT_IN_SD_SCRIPTS_UNET = ("TimestepEmbedding",)


def lycoris_module_names(unet: nn.Module, text_encoders: list) -> dict[str, str]:
    """LyCORIS' name for every Linear/Conv2d of our model -> sd-scripts' (kohya) name."""
    layout = UNetBlockLayout.from_config(unet.config)
    out = {}
    for path, module in unet.named_modules():
        if path and not list(module.children()):  # leaves: layers and norms (train_norm)
            try:
                out[f"lora_unet_{path}".replace(".", "_")] = unet_lora_name(path, layout)
            except (KeyError, ValueError):
                continue  # a leaf outside the sgm mapping; LyCORIS never targets it here
    for index, encoder in enumerate(text_encoders, start=1):
        for path, module in encoder.named_modules():
            if path and not list(module.children()):
                out[f"lora_te{index}_{path}".replace(".", "_")] = text_encoder_lora_name(path, index)
    return out


def _sd_scripts_preset(name: str) -> dict:
    from lycoris.config import PRESET

    preset = dict(PRESET[name])
    preset["unet_target_module"] = [m for m in preset.get("unet_target_module", []) if m not in NOT_IN_SD_SCRIPTS_UNET]
    preset["unet_target_name"] = []
    return preset


def _rename(sd: Mapping[str, torch.Tensor], names: Mapping[str, str]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        module, _, rest = key.partition(".")
        out[f"{names.get(module, module)}.{rest}" if rest else names.get(module, module)] = value
    return out


class LycorisAdapter(nn.Module):
    """A LyCORIS network with the interface the run uses (apply/remove, parameter groups,
    kohya-named state dict); `inner` is the library's `LycorisNetworkKohya`."""

    def __init__(self, inner: nn.Module, names: Mapping[str, str]) -> None:
        super().__init__()
        self.inner = inner
        self._to_kohya = dict(names)
        self._from_kohya = {v: k for k, v in names.items()}
        self._applied = True  # LycorisNetworkKohya.apply_to has run (it also registers the modules)

    def lora_modules(self):
        """Every LyCORIS module, text encoders' first."""
        return list(self.inner.text_encoder_loras) + list(self.inner.unet_loras)

    def modules_by_part(self) -> dict[str, dict[str, nn.Module]]:
        """The modules by part (unet, te1, te2), each under its sd-scripts name."""
        parts: dict[str, dict[str, nn.Module]] = {part: {} for part in PARTS}
        for module in self.lora_modules():
            name = self._to_kohya.get(module.lora_name, module.lora_name)
            parts.setdefault(part_of(name) or "unet", {})[name] = module
        return parts

    def apply(self) -> None:
        """Hook the modules into the model's layers (once; a second call does nothing)."""
        if self._applied:  # LyCORIS' apply_to twice would make a module call itself
            return
        for module in self.lora_modules():
            module.apply_to()
        self._applied = True

    def remove(self) -> None:
        """Unhook the modules, leaving the model's layers as they were."""
        if not self._applied:
            return
        for module in reversed(self.lora_modules()):
            module.restore()
        self._applied = False

    def set_multiplier(self, multiplier: float) -> None:
        """Scale every module's output by `multiplier` (sd-scripts' network_multiplier)."""
        for module in self.lora_modules():
            module.multiplier = multiplier

    def param_groups(self, unet_lr: float, te1_lr: float, te2_lr: float, *, loraplus_unet_ratio=None,
                     loraplus_text_encoder_ratio=None, **_: Any) -> list[dict[str, Any]]:
        """Optimizer parameter groups, one learning rate per part (unet, te1, te2) with the LoRA+ ratios applied as
        for our own network."""
        from engine.lora.block_weights import part_groups

        groups = []
        by_part = self.modules_by_part()
        for part, lr in zip(PARTS, (unet_lr, te1_lr, te2_lr)):
            ratio = loraplus_unet_ratio if part == "unet" else loraplus_text_encoder_ratio
            groups += part_groups(part, list(by_part[part].values()), float(lr), None, ratio)
        return groups

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """LyCORIS' tensors under sd-scripts' SDXL module names (what sd-scripts + LyCORIS write)."""
        return _rename({k: v.detach() for k, v in self.inner.state_dict().items()}, self._to_kohya)

    def load_kohya_state_dict(self, sd: Mapping[str, torch.Tensor], strict: bool = True):
        """Load weights saved under sd-scripts key names; returns (missing, unexpected) keys. With `strict`, raises
        ConfigError when keys are missing, unexpected or of another shape."""
        own = self.kohya_state_dict()
        missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        wrong = [k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape)]
        if strict and (missing or unexpected or wrong):
            sample = (missing or unexpected or wrong)[:3]
            raise ConfigError(f"the LyCORIS weights do not match this network ({len(missing)} missing, "
                              f"{len(unexpected)} unexpected, {len(wrong)} of another shape; e.g. {sample})",
                              key="network_weights",
                              hint="use the algo, dims and network_args the file was trained with")
        self.inner.load_state_dict(_rename(sd, self._from_kohya), strict=False)
        return missing, unexpected


def create_lycoris_network(model, net_cfg) -> LycorisAdapter:
    """A LyCORIS network over `model` (an engine.model.load.SdxlModel), applied, as sd-scripts'
    `create_network(1.0, network_dim, network_alpha, vae, text_encoders, unet, **network_args)`."""
    try:
        from lycoris.kohya import create_network
    except ImportError:
        raise ConfigError("network_module = \"lycoris.kohya\" needs the LyCORIS package", key="network_module",
                          hint="pip install 'sdxl-tui[lycoris]'") from None
    import toml

    args = dict(net_cfg.parsed_args)
    preset = args.pop("preset", "full")
    encoders = [] if net_cfg.network_train_unet_only else [model.text_encoder1, model.text_encoder2]
    with tempfile.TemporaryDirectory() as folder:
        preset_file = Path(folder) / "preset.toml"
        preset_file.write_text(toml.dumps(_sd_scripts_preset(preset)))
        inner = create_network(1.0, net_cfg.network_dim, net_cfg.network_alpha, None, encoders or None, model.unet,
                               warn_on_unmatched=False, preset=str(preset_file), **args)
    inner.apply_to(encoders or None, model.unet, apply_text_encoder=bool(encoders),
                   apply_unet=not net_cfg.network_train_text_encoder_only)
    return LycorisAdapter(inner, lycoris_module_names(model.unet, encoders))
