"""What to change after the loss became NaN or infinite: only the advice that would change
something for this config (no "set max_grad_norm = 1.0" when it already is)."""
from __future__ import annotations

from typing import Any

SUGGESTED_MAX_GRAD_NORM = 1.0


def divergence_hint(cfg: Any) -> str:
    """Suggestions for `cfg` (a RunConfig; None gives the general advice)."""
    if cfg is None:
        return ("with fp16, set no_half_vae = true (SDXL's VAE overflows in fp16) or use bf16; "
                "otherwise lower the learning rate or set max_grad_norm = 1.0")
    out = []
    precision = cfg.precision
    if precision.mixed_precision == "fp16":
        out.append("use mixed_precision = \"bf16\" if the GPU supports it (fp16 overflows more easily)")
        if not precision.no_half_vae:
            out.append("set no_half_vae = true (SDXL's VAE overflows in fp16)")
    lr = cfg.optimizer.learning_rate
    out.append(f"lower the learning rate (now {lr:g}), e.g. to {lr / 2:g}")
    norm = cfg.optimizer.max_grad_norm
    if not norm or norm <= 0:
        out.append(f"set max_grad_norm = {SUGGESTED_MAX_GRAD_NORM} (gradient clipping is off)")
    elif norm > SUGGESTED_MAX_GRAD_NORM:
        out.append(f"lower max_grad_norm (now {norm:g}) to {SUGGESTED_MAX_GRAD_NORM}")
    return "; ".join(out)
