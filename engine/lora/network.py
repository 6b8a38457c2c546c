"""The LoRA network: which layers get an adapter (exactly sd-scripts' `networks.lora` choice
for SDXL), how an adapter joins a layer, and how its parameters reach the optimizer.

An adapter replaces its layer's `forward` rather than the layer itself, so the base model's
module tree and state dict stay untouched and the text encoders / UNet keep working when
their own forward is called (training loop, diffusers pipelines for samples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional

import torch
from torch import nn

from engine.config.network_args import LoraArgs
from engine.errors import ConfigError
from engine.lora.names import text_encoder_lora_name, unet_lora_name
from engine.model.sdxl_layout import UNetBlockLayout

# sd-scripts looks for these classes and wraps every Linear / Conv2d inside them.
UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_TARGETS = ("CLIPAttention", "CLIPMLP")
PARTS = ("unet", "te1", "te2")
ModuleDims = Mapping[str, tuple[int, Optional[float]]]


def dims_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, Optional[float]]]:
    """lora name -> (rank, alpha) of every module in a kohya state dict (alpha None when the
    file has none, which means alpha = rank)."""
    out: dict[str, tuple[int, Optional[float]]] = {}
    for key, value in sd.items():
        if key.endswith(".lora_down.weight"):
            name = key[: -len(".lora_down.weight")]
            alpha = sd.get(f"{name}.alpha")
            out[name] = (int(value.shape[0]), None if alpha is None else float(alpha))
    return out


class LoRAModule(nn.Module):
    """Low-rank update of one Linear or Conv2d: y = W x + multiplier · (alpha / rank) · up(down(x))."""

    def __init__(self, lora_name: str, org_module: nn.Module, *, dim: int, alpha: Optional[float],
                 dropout: Optional[float] = None, multiplier: float = 1.0, rank_dropout: Optional[float] = None,
                 module_dropout: Optional[float] = None) -> None:
        super().__init__()
        self.lora_name = lora_name
        self.lora_dim = dim
        device = org_module.weight.device
        if isinstance(org_module, nn.Conv2d):
            self.lora_down = nn.Conv2d(org_module.in_channels, dim, org_module.kernel_size, org_module.stride,
                                       org_module.padding, bias=False, device=device)
            self.lora_up = nn.Conv2d(dim, org_module.out_channels, (1, 1), (1, 1), bias=False, device=device)
        elif isinstance(org_module, nn.Linear):
            # The constructors' own init is overwritten below, but it draws from torch's global
            # generator exactly as sd-scripts' LoRAModule does: skipping it would change every
            # seeded run's LoRA init, noise and timesteps against sd-scripts (issue 17 tried).
            self.lora_down = nn.Linear(org_module.in_features, dim, bias=False, device=device)
            self.lora_up = nn.Linear(dim, org_module.out_features, bias=False, device=device)
        else:
            raise TypeError(f"LoRA wraps nn.Linear or nn.Conv2d, not {type(org_module).__name__}")
        self._linear = isinstance(org_module, nn.Linear)
        # sd-scripts: alpha None or 0 means "no scaling", i.e. alpha = rank.
        alpha = float(dim) if not alpha else float(alpha)
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32, device=device))
        self.scale = alpha / dim
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout
        self.multiplier = multiplier
        # A plain list keeps the wrapped layer out of this module's children and state dict.
        self._org = [org_module]
        self._org_forward = None
        self._patched_before = None  # an instance-level forward someone else installed first

    @property
    def org_module(self) -> nn.Module:
        """The wrapped Linear / Conv2d (kept out of this module's state dict)."""
        return self._org[0]

    @property
    def applied(self) -> bool:
        """Whether the wrapped layer's forward currently runs through this module."""
        return self._org_forward is not None

    def apply_to(self) -> None:
        """Route the wrapped layer's forward through `forward` (idempotent)."""
        if self.applied:
            return
        self._patched_before = self.org_module.__dict__.get("forward")
        self._org_forward = self.org_module.forward
        self.org_module.forward = self.forward

    def remove(self) -> None:
        """Give the wrapped layer its own forward back (idempotent)."""
        if not self.applied:
            return
        org = self.org_module
        if self._patched_before is None:
            org.__dict__.pop("forward", None)
        else:
            org.forward = self._patched_before
        self._org_forward = self._patched_before = None

    def refresh_scale(self) -> None:
        """Recompute alpha / rank after `alpha` changed (a loaded file sets it)."""
        self.scale = float(self.alpha) / self.lora_dim

    def delta_weight(self) -> torch.Tensor:
        """(alpha / rank) · up @ down in the wrapped layer's weight shape (fp32), without the multiplier."""
        up = self.lora_up.weight.float()
        down = self.lora_down.weight.float()
        if down.dim() == 2:
            return up @ down * self.scale
        # conv: up is 1x1, so the product is a contraction over the rank.
        return torch.einsum("or,rikl->oikl", up.flatten(1), down) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """W x + multiplier · (alpha / rank) · up(dropout(down(x))), as sd-scripts' networks/lora.py;
        `x` is the wrapped layer's input ([B, T, in] for Linear, [B, C, H, W] for Conv2d), the
        result has its output's shape and dtype. Module dropout skips the whole update; rank
        dropout zeroes ranks per sample and rescales by 1 / (1 - p) (sd-scripts' LoRAModule.forward)."""
        # This runs once per adapted layer per step (hundreds of times), so it avoids every op
        # that does no work: no-op casts and nn.Module call overhead for the two Linear adapters
        # (F.linear on their weights; same parameters, same graph, same rounding as before).
        out = self._org_forward(x)
        training = self.training
        if self.module_dropout is not None and training and torch.rand(1) < self.module_dropout:
            return out
        down = self.lora_down.weight
        if x.dtype != down.dtype and not torch.is_autocast_enabled(x.device.type):
            x = x.to(down.dtype)  # fp32 adapter on a bf16/fp16 base
        lx = nn.functional.linear(x, down) if self._linear else self.lora_down(x)
        if self.dropout is not None and training:
            lx = nn.functional.dropout(lx, p=self.dropout)
        scale = self.scale
        if self.rank_dropout is not None and training:
            mask = torch.rand((lx.size(0), self.lora_dim), device=lx.device) > self.rank_dropout
            if lx.dim() == 3:  # text encoder: [B, tokens, rank]
                mask = mask.unsqueeze(1)
            elif lx.dim() == 4:  # conv: [B, rank, H, W]
                mask = mask.unsqueeze(-1).unsqueeze(-1)
            lx = lx * mask
            scale = self.scale / (1.0 - self.rank_dropout)
        lx = nn.functional.linear(lx, self.lora_up.weight) if self._linear else self.lora_up(lx)
        lx = lx * (self.multiplier * scale)
        return out + (lx if lx.dtype == out.dtype else lx.to(out.dtype))


@dataclass
class LoadReport:
    """What `load_kohya_state_dict` did; `alpha_from_file` lists modules whose alpha the file changed."""

    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    alpha_from_file: list[str] = field(default_factory=list)


class LoRANetwork(nn.Module):
    """All adapters of one run. Submodule names are the kohya module names, so
    `state_dict()` keys are exactly the keys sd-scripts writes."""

    def __init__(self, modules_by_part: Mapping[str, list[LoRAModule]]) -> None:
        super().__init__()
        self._parts: dict[str, list[str]] = {part: [] for part in PARTS}
        for part in PARTS:
            for module in modules_by_part.get(part, []):
                if module.lora_name in self._modules:
                    raise ValueError(f"duplicated LoRA name: {module.lora_name}")
                self.add_module(module.lora_name, module)
                self._parts[part].append(module.lora_name)

    def modules_by_part(self) -> dict[str, dict[str, LoRAModule]]:
        """{"unet" | "te1" | "te2": {kohya module name: module}}."""
        return {part: {name: self._modules[name] for name in names} for part, names in self._parts.items()}

    def lora_modules(self) -> Iterable[LoRAModule]:
        """Every LoRA module, UNet first, then text encoder 1 and 2."""
        for names in self._parts.values():
            for name in names:
                yield self._modules[name]

    def apply(self) -> None:
        """Inject every module into its wrapped layer."""
        for module in self.lora_modules():
            module.apply_to()

    def remove(self) -> None:
        """Take every module out again; the base model runs as before."""
        for module in self.lora_modules():
            module.remove()

    def set_multiplier(self, multiplier: float) -> None:
        """Strength of the whole LoRA at inference (1.0 trains; 0.0 is the base model)."""
        for module in self.lora_modules():
            module.multiplier = multiplier

    def param_groups(self, unet_lr: float, te1_lr: float, te2_lr: float, *,
                     block_lr_weight: Optional[tuple[float, ...]] = None, loraplus_unet_ratio: Optional[float] = None,
                     loraplus_text_encoder_ratio: Optional[float] = None) -> list[dict[str, Any]]:
        """Optimizer groups "unet", "te1", "te2" (per UNet block "unet_block<i>" with block lr weights,
        and a "<name> plus" group of lora_up weights at lr x ratio with LoRA+, as sd-scripts'
        `prepare_optimizer_params`); a group whose rate is 0 is left out and its parameters frozen."""
        from engine.lora.block_weights import part_groups

        groups = []
        for part, lr in zip(PARTS, (unet_lr, te1_lr, te2_lr)):
            modules = list(self.modules_by_part()[part].values())
            ratio = loraplus_unet_ratio if part == "unet" else loraplus_text_encoder_ratio
            groups += part_groups(part, modules, float(lr), block_lr_weight if part == "unet" else None, ratio)
        return groups

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors under sd-scripts' key names (lora_unet_..., lora_te1_..., lora_te2_...: lora_down.weight
        [rank, in(, k, k)], lora_up.weight [out, rank(, 1, 1)], alpha []), detached, in the network's dtype."""
        return {key: value.detach() for key, value in self.state_dict().items()}

    def load_kohya_state_dict(self, sd: Mapping[str, torch.Tensor], strict: bool = True) -> LoadReport:
        """Load a kohya-layout state dict (e.g. `network_weights`). Alpha comes from the file:
        it is part of what the file means."""
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        shape_errors = [
            f"{key}: file has {tuple(sd[key].shape)}, this network has {tuple(own[key].shape)}"
            for key in sorted(set(own) & set(sd)) if tuple(sd[key].shape) != tuple(own[key].shape)
        ]
        if strict and (missing or unexpected or shape_errors):
            raise ConfigError(_mismatch_message(self, sd, missing, unexpected, shape_errors), key="network_weights",
                              hint="use a LoRA trained with the same network_dim, conv_dim and "
                                   "network_train_unet_only as this config, or change the config to match it")
        changed = []
        with torch.no_grad():
            for key, value in sd.items():
                if key in own and tuple(value.shape) == tuple(own[key].shape):
                    own[key].copy_(value.to(own[key].dtype))
        for module in self.lora_modules():
            old = module.scale
            module.refresh_scale()
            if not math.isclose(old, module.scale, rel_tol=1e-6):
                changed.append(module.lora_name)
        return LoadReport(loaded=len(set(own) & set(sd)) - len(shape_errors), missing=missing,
                          unexpected=unexpected, alpha_from_file=changed)


def _ranks(sd: Mapping[str, torch.Tensor]) -> set[int]:
    return {int(v.shape[0]) for k, v in sd.items() if k.endswith("lora_down.weight")}


def _mismatch_message(network: LoRANetwork, sd: Mapping[str, torch.Tensor], missing: list[str],
                      unexpected: list[str], shape_errors: list[str]) -> str:
    def listing(title: str, items: list[str]) -> str:
        shown = ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")
        return f"\n  {title} ({len(items)}): {shown}"

    found, configured = sorted(_ranks(sd)), sorted(_ranks(network.state_dict()))
    message = (f"network_weights does not match this network: rank found {found}, configured {configured}; "
               f"{len([k for k in sd if k.endswith('lora_down.weight')])} modules in the file, "
               f"{sum(1 for _ in network.lora_modules())} in the network")
    if missing:
        message += listing("missing from the file", missing)
    if unexpected:
        message += listing("unexpected in the file", unexpected)
    if shape_errors:
        message += listing("shape differs", shape_errors)
    return message


def _wrappable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, nn.Conv2d))


def _is_conv_3x3(module: nn.Module) -> bool:
    """sd-scripts' split: Linear and 1x1 Conv2d take network_dim; other convs need conv_dim."""
    return isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)


def _unet_modules(unet: nn.Module, *, dim: int, alpha: float, dropout: Optional[float],
                  args: LoraArgs, module_dims: Optional[ModuleDims]) -> list[LoRAModule]:
    from engine.lora.block_weights import block_index

    layout = UNetBlockLayout.from_config(unet.config)
    conv_on = bool(args.conv_dim) or args.conv_block_dims is not None or module_dims is not None
    targets = UNET_TARGETS + (UNET_CONV_TARGETS if conv_on else ())
    out = []
    for name, container in unet.named_modules():
        if type(container).__name__ not in targets:
            continue
        for child_name, child in container.named_modules():
            if not _wrappable(child):
                continue
            lora_name = unet_lora_name(f"{name}.{child_name}", layout)
            if module_dims is not None:
                rank, scale_alpha = module_dims.get(lora_name, (0, None))
            else:
                rank, scale_alpha = _rank_and_alpha(lora_name, _is_conv_3x3(child), dim, alpha, args, block_index)
            if not rank:
                continue
            out.append(LoRAModule(lora_name, child, dim=rank, alpha=scale_alpha, dropout=dropout,
                                  rank_dropout=args.rank_dropout, module_dropout=args.module_dropout))
    return out


def _rank_and_alpha(lora_name: str, conv3x3: bool, dim: int, alpha: float, args: LoraArgs,
                    block_index) -> tuple[int, Optional[float]]:
    """sd-scripts' choice: per-block values when block_dims (or block lr weights) are set, else
    network_dim/alpha for Linear and 1x1 convs and conv_dim/alpha for the other convs."""
    if args.block_dims is not None:
        index = block_index(lora_name)
        if not conv3x3:
            return args.block_dims[index], args.block_alphas[index]
        if args.conv_block_dims is None:
            return 0, None
        return args.conv_block_dims[index], args.conv_block_alphas[index]
    if not conv3x3:
        return dim, alpha
    if not args.conv_dim:
        return 0, None
    return args.conv_dim, (1.0 if args.conv_alpha is None else args.conv_alpha)


def _text_encoder_modules(text_encoder: nn.Module, index: int, *, dim: int, alpha: float,
                          dropout: Optional[float], args: LoraArgs,
                          module_dims: Optional[ModuleDims]) -> list[LoRAModule]:
    out = []
    for name, container in text_encoder.named_modules():
        if type(container).__name__ not in TEXT_ENCODER_TARGETS:
            continue
        for child_name, child in container.named_modules():
            if _wrappable(child):
                lora_name = text_encoder_lora_name(f"{name}.{child_name}", index)
                rank, scale_alpha = (dim, alpha) if module_dims is None else module_dims.get(lora_name, (0, None))
                if not rank:
                    continue
                out.append(LoRAModule(lora_name, child, dim=rank, alpha=scale_alpha, dropout=dropout,
                                      rank_dropout=args.rank_dropout, module_dropout=args.module_dropout))
    return out


def create_network(unet: nn.Module, text_encoder1: Optional[nn.Module], text_encoder2: Optional[nn.Module], *,
                   dim: int, alpha: float, dropout: Optional[float] = None, conv_dim: Optional[int] = None,
                   conv_alpha: Optional[float] = None, train_unet_only: bool = False,
                   train_text_encoder_only: bool = False, args: Optional[LoraArgs] = None,
                   module_dims: Optional[ModuleDims] = None) -> LoRANetwork:
    """Adapters on the layers sd-scripts' `networks.lora` picks for SDXL (not yet applied:
    call `apply()`). `args` carries the parsed network_args (block dims, dropouts); without it,
    `conv_dim` / `conv_alpha` are used, and `conv_alpha` unset means 1.0, as in sd-scripts.
    `module_dims` (lora name -> (rank, alpha), see `dims_from_state_dict`) overrides all that:
    exactly those modules, with those ranks (sd-scripts' `create_network_from_weights`)."""
    if args is None:
        args = LoraArgs(conv_dim=conv_dim, conv_alpha=conv_alpha)
    parts: dict[str, list[LoRAModule]] = {}
    if not train_text_encoder_only:
        parts["unet"] = _unet_modules(unet, dim=dim, alpha=alpha, dropout=dropout, args=args, module_dims=module_dims)
    if not train_unet_only:
        for index, encoder in ((1, text_encoder1), (2, text_encoder2)):
            if encoder is not None:
                parts[f"te{index}"] = _text_encoder_modules(encoder, index, dim=dim, alpha=alpha, dropout=dropout,
                                                            args=args, module_dims=module_dims)
    return LoRANetwork(parts)
