"""The UNet forward the training loop calls, made ready for several processes (accelerate DDP)
and for `torch.compile`.

LoRA adapters replace their layers' `forward` (engine/lora/network.py), so the trainable parameters
live in the network module, not in the UNet. DDP averages gradients only for parameters of
the module whose `forward` it runs, and only when that forward runs through DDP (that call
arms its gradient hooks for the coming backward pass). `UNetWithLoRA` therefore holds the
UNet and the network together and its forward is the UNet's: `accelerator.prepare` wraps it
in DistributedDataParallel, and the loop calls the wrapped module where it called the UNet.

The frozen base weights and all buffers are listed in `_ddp_params_and_buffers_to_ignore`:
every rank loaded the same base model, so DDP must not broadcast ~5 GB of UNet at start, nor
the LoRA `alpha` buffers before every forward. Only the LoRA parameters (already equal on
every rank: same seed) are broadcast once and all-reduced every backward pass.
"""
from __future__ import annotations

from typing import Any

from torch import nn


class UNetWithLoRA(nn.Module):
    """The UNet and its LoRA network as one module whose forward is the UNet's."""

    def __init__(self, unet: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.network = network
        self._ddp_params_and_buffers_to_ignore = [
            name for name, param in self.named_parameters() if not param.requires_grad
        ] + [name for name, _ in self.named_buffers()]

    def forward(self, *args: Any, **kwargs: Any):
        """The UNet's forward, unchanged (same arguments and output); the LoRA modules are already hooked
        into it, so DDP sees their parameters through `self.network`.
        """
        return self.unet(*args, **kwargs)


def training_unet(accelerator: Any, unet: nn.Module, network: nn.Module, *, compile_unet: bool = False):
    """What the loop should call in place of `unet(...)`.

    One process: the UNet itself (compiled in place when asked). Several: the UNet and network
    wrapped in accelerate's DDP. `compile_unet` compiles the UNet's forward in place
    (`nn.Module.compile`), so sampling and every caller see the same compiled module.
    """
    if compile_unet:
        unet.compile()
    if accelerator.num_processes <= 1:
        return unet
    if _trains_text_encoders(network):
        # SDXL reads text encoder 1's penultimate layer, so the adapters on its last layer never
        # get a gradient; DDP must be told to expect parameters without one.
        from accelerate.utils import DistributedDataParallelKwargs

        accelerator.ddp_handler = DistributedDataParallelKwargs(find_unused_parameters=True)
    return accelerator.prepare_model(UNetWithLoRA(unet, network), device_placement=False)


def _trains_text_encoders(network: nn.Module) -> bool:
    parts = network.modules_by_part() if hasattr(network, "modules_by_part") else {}
    return any(parts.get(part) for part in ("te1", "te2"))


def parameters_requiring_sync(module: nn.Module) -> list[str]:
    """Names of the parameters DDP averages (for tests and diagnostics)."""
    target = getattr(module, "module", module)
    ignored = set(getattr(target, "_ddp_params_and_buffers_to_ignore", ()))
    return [name for name, p in target.named_parameters() if p.requires_grad and name not in ignored]


# accelerate launch sets these for the sharded back-ends its config files can choose.
UNSUPPORTED_LAUNCH_FLAGS = {
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_FSDP": "FSDP",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}


def check_launch_environment(environ=None) -> None:
    """Refuse accelerate configs the engine cannot train with (before accelerate starts them).

    The engine steps its own optimizer, accumulates gradients itself and keeps LoRA weights in
    fp32; DeepSpeed / FSDP engines take all three over, so a run would silently train wrong.
    """
    import os

    from engine.errors import ConfigError

    environ = os.environ if environ is None else environ
    for flag, name in UNSUPPORTED_LAUNCH_FLAGS.items():
        if str(environ.get(flag, "")).lower() in ("1", "true", "yes"):
            raise ConfigError(f"this run was launched with an accelerate {name} config, which sdxl-tui does not "
                              "support (it trains LoRA with plain DDP)",
                              hint="launch with sdxl_tui/templates/accelerate/multi_gpu.yaml "
                                   "(distributed_type: MULTI_GPU); "
                                   "see docs/multi_gpu.md")
