"""What runs after every optimizer step besides the update itself: sd-scripts'
`scale_weight_norms` (after the step, as in `train_network.py`) and the EMA update. The loop
calls `after_step`, and asks `metrics` for the extra Step-event fields at logging points."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass
class StepHooks:
    """What runs after each optimizer step: max-norm scaling (`scale_weight_norms`, sd-scripts
    networks/lora.py `apply_max_norm_regularization`; formula in engine/lora/max_norm.py) and the EMA.
    """
    network: Any
    scale_weight_norms: Optional[float] = None
    ema: Any = None  # engine.train.ema.LoraEma
    last_norms: Any = None  # engine.lora.max_norm.MaxNormResult of the last step

    def after_step(self, step: int) -> None:
        """After optimizer step `step` (1-based): scale the LoRA weights' norms, then update the EMA.
        Stays on the device (no host sync).
        """
        if self.scale_weight_norms:
            from engine.lora.max_norm import apply_max_norm

            self.last_norms = apply_max_norm(self.network, self.scale_weight_norms)
        if self.ema is not None:
            self.ema.update(step)

    def metrics(self) -> dict:
        """Fields for the Step event (a host sync: called at logging points only)."""
        return self.last_norms.as_numbers() if self.last_norms is not None else {}


def make_step_hooks(network, cfg) -> Optional[StepHooks]:
    """None when no option asks for anything after a step."""
    norms = cfg.network.scale_weight_norms
    ema = None
    if cfg.training.ema_decay is not None:
        from engine.train.ema import LoraEma

        ema = LoraEma(network, cfg.training.ema_decay, cfg.training.ema_update_every)
    if not norms and ema is None:
        return None
    return StepHooks(network=network, scale_weight_norms=norms, ema=ema)
