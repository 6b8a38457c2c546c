"""Max-norm regularisation of LoRA updates (`scale_weight_norms`), as sd-scripts'
`networks/lora.py` `LoRANetwork.apply_max_norm_regularization`:

for each module, ΔW = (alpha / rank) · up @ down; norm = max(‖ΔW‖_F, max_norm / 2);
ratio = min(norm, max_norm) / norm; up and down are each multiplied by √ratio, so ΔW by ratio.
"Keys scaled" counts modules with ratio ≠ 1; the mean / max norms are ‖ΔW‖ · ratio.

Everything stays on the device (no host sync per step); `MaxNormResult` holds 0-dim tensors
that the loop reads at its logging points.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class MaxNormResult:
    """One max-norm pass: how many modules were scaled, and the mean and max ‖ΔW‖_F after it (0-dim tensors on the
    device)."""
    keys_scaled: Any  # 0-dim tensor
    mean_norm: Any
    max_norm: Any

    def as_numbers(self) -> dict[str, float]:
        """The figures as Python numbers (one host sync)."""
        return {"keys_scaled": int(self.keys_scaled), "mean_norm": float(self.mean_norm),
                "max_norm": float(self.max_norm)}


def apply_max_norm(network, max_norm_value: float) -> MaxNormResult:
    """Scale every module whose update norm exceeds `max_norm_value` (in place, no grad).
    A LyCORIS network (engine/lora/lycoris_adapter.py) is scaled by the library's own
    `apply_max_norm_regularization`, the method sd-scripts' train_network.py calls for it."""
    import torch

    inner = getattr(network, "inner", None)
    if inner is not None and hasattr(inner, "apply_max_norm_regularization"):
        device = next(network.parameters()).device
        scaled, mean, largest = inner.apply_max_norm_regularization(max_norm_value, device)
        return MaxNormResult(torch.tensor(scaled), torch.tensor(float(mean)), torch.tensor(float(largest)))

    scaled, norms = [], []
    with torch.no_grad():
        for module in network.lora_modules():
            updown = module.delta_weight()
            full = updown.norm()
            norm = full.clamp(min=max_norm_value / 2)
            ratio = norm.clamp(max=max_norm_value) / norm
            root = ratio.sqrt()
            module.lora_up.weight.mul_(root.to(module.lora_up.weight.dtype))
            module.lora_down.weight.mul_(root.to(module.lora_down.weight.dtype))
            scaled.append(ratio != 1)
            norms.append(full * ratio)
    if not norms:
        zero = torch.zeros(())
        return MaxNormResult(zero, zero, zero)
    stacked = torch.stack(norms)
    return MaxNormResult(torch.stack(scaled).sum(), stacked.mean(), stacked.max())
