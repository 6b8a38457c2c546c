"""sd-scripts' precision options: `full_fp16` / `full_bf16` (the LoRA's own weights and gradients
in half precision) and `fp8_base` / `fp8_base_unet` (the frozen base weights stored in 8 bits).

fp8 base weights: every frozen nn.Linear / nn.Conv2d weight of the UNet (and, with fp8_base, of
both text encoders) is stored as `torch.float8_e4m3fn` and turned into the compute dtype (the
mixed precision, bf16 or fp16) by a parametrization each time the layer runs, so the layer
computes exactly as a bf16 layer whose weights were rounded to fp8. Biases, norms and
embeddings stay in the compute dtype (they are <1 % of the weights). sd-scripts stores the
whole UNet in fp8 and relies on CUDA autocast to up-cast (train_network.py, `--fp8_base`);
the explicit up-cast here works on any device. The LoRA adapters are never fp8.

full_fp16 follows sd-scripts' train_util.patch_accelerator_for_fp16_training: the fp16 gradient
scaler is allowed to unscale fp16 gradients.
"""
from __future__ import annotations

from typing import Any

from engine.errors import ConfigError


def check_precision_options(cfg: Any) -> None:
    """ConfigError (exit 78) before any model loads when the options cannot work together or
    the installed torch cannot store float8."""
    p = cfg.precision
    if p.full_fp16 and p.full_bf16:
        raise ConfigError("full_fp16 and full_bf16 cannot both be on", key="full_fp16", hint="choose one")
    if p.full_fp16 and p.mixed_precision != "fp16":
        raise ConfigError("full_fp16 needs mixed_precision = \"fp16\" (as in sd-scripts)", key="full_fp16",
                          hint="set mixed_precision = \"fp16\" or turn full_fp16 off")
    if p.full_bf16 and p.mixed_precision != "bf16":
        raise ConfigError("full_bf16 needs mixed_precision = \"bf16\" (as in sd-scripts)", key="full_bf16",
                          hint="set mixed_precision = \"bf16\" or turn full_bf16 off")
    if p.fp8_base or p.fp8_base_unet:
        key = "fp8_base" if p.fp8_base else "fp8_base_unet"
        if p.mixed_precision == "no":
            raise ConfigError(f"{key} computes in the mixed precision; with mixed_precision = \"no\" there is none",
                              key=key, hint="set mixed_precision = \"bf16\" (or \"fp16\")")
        import torch

        if not hasattr(torch, "float8_e4m3fn"):
            raise ConfigError(f"{key}: the installed torch {torch.__version__} has no float8_e4m3fn dtype", key=key,
                              hint="install torch 2.1 or newer, or turn it off")


def lora_dtype(cfg: Any):
    """dtype of the LoRA's trainable weights: fp32, or half with full_fp16 / full_bf16."""
    import torch

    if cfg.precision.full_fp16:
        return torch.float16
    if cfg.precision.full_bf16:
        return torch.bfloat16
    return torch.float32


def allow_fp16_gradients(scaler: Any) -> None:
    """Let torch's GradScaler unscale fp16 gradients (it refuses by default), as sd-scripts does."""
    if scaler is None:
        return
    original = scaler._unscale_grads_

    def unscale(optimizer, inv_scale, found_inf, allow_fp16):  # noqa: ARG001  (always allowed)
        return original(optimizer, inv_scale, found_inf, True)

    scaler._unscale_grads_ = unscale


def _upcast(dtype):
    """Parametrization module: the stored fp8 weight, read in `dtype`."""
    import torch

    class UpCast(torch.nn.Module):
        def forward(self, weight):
            return weight.to(dtype)

    return UpCast()


def store_weights_fp8(module: Any, compute_dtype) -> int:
    """Store the weights of `module`'s Linear and Conv2d layers as float8_e4m3fn, read back in
    `compute_dtype` each forward. Returns the number of weights now stored in fp8."""
    import torch
    from torch.nn.utils import parametrize

    count = 0
    for layer in list(module.modules()):
        if not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) or parametrize.is_parametrized(layer, "weight"):
            continue
        weight = layer.weight
        stored = torch.nn.Parameter(weight.detach().to(torch.float8_e4m3fn), requires_grad=False)
        layer.weight = stored
        parametrize.register_parametrization(layer, "weight", _upcast(compute_dtype), unsafe=True)
        count += stored.numel()
    return count


def fp8_parts(cfg: Any) -> tuple[str, ...]:
    """Which frozen parts store fp8 weights."""
    if cfg.precision.fp8_base:
        return ("unet", "text_encoder1", "text_encoder2")
    if cfg.precision.fp8_base_unet:
        return ("unet",)
    return ()


def compute_dtype_of(module: Any, fallback):
    """The dtype a module computes in: its first non-fp8 floating parameter's (diffusers'
    `.dtype` would report float8 for an fp8-stored UNet)."""
    import torch

    for param in module.parameters():
        if param.is_floating_point() and param.dtype not in (torch.float8_e4m3fn, torch.float8_e5m2):
            return param.dtype
    return fallback
