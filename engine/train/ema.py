"""Exponential moving average of the trained adapter weights (`ema_decay`, `ema_update_every`).

sd-scripts has no EMA; OneTrainer, SimpleTuner and ai-toolkit do. The update is the usual one
(Polyak averaging; e.g. diffusers `EMAModel.step` with a fixed decay):
    shadow <- decay · shadow + (1 - decay) · weight,   every `update_every` optimizer steps.
The raw weights keep training; the shadow is what LoRA files (and samples) show. A state
folder keeps both, so a resume continues exactly.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


class LoraEma:
    """fp32 shadow copies of the network's parameters (same names as `named_parameters`)."""

    def __init__(self, network, decay: float, update_every: int = 1) -> None:
        import torch

        self.decay = float(decay)
        self.update_every = int(update_every)
        self.params = dict(network.named_parameters())
        self.shadow = {name: p.detach().to(torch.float32).clone() for name, p in self.params.items()}

    def update(self, step: int) -> None:
        """Called after optimizer step `step` (1-based); updates on every `update_every`-th."""
        import torch

        if step % self.update_every:
            return
        with torch.no_grad():
            shadows = list(self.shadow.values())
            weights = [self.params[name].detach().float() for name in self.shadow]
            torch._foreach_lerp_(shadows, weights, 1.0 - self.decay)

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The network's parameters hold the EMA weights inside the block, the raw ones after."""
        import torch

        saved = {}
        with torch.no_grad():
            for name, p in self.params.items():
                saved[name] = p.detach().clone()
                p.copy_(self.shadow[name].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(saved[name])

    def state_dict(self) -> dict:
        """The fp32 shadow weights by parameter name, on CPU and contiguous (for a state folder)."""
        return {name: t.detach().cpu().contiguous() for name, t in self.shadow.items()}

    def load_state_dict(self, state: dict) -> None:
        """Copy saved shadow weights in (cast to each shadow's device and fp32); keys not in this network
        are ignored. Raises ConfigError when `state` lacks any of this network's parameters.
        """
        missing = set(self.shadow) - set(state)
        if missing:
            from engine.errors import ConfigError

            raise ConfigError(f"the saved EMA weights lack {len(missing)} of this network's parameters",
                              hint="resume with the network options the run was started with")
        for name, shadow in self.shadow.items():
            shadow.copy_(state[name].to(shadow.device, shadow.dtype))
