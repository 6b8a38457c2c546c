"""CUDA out of memory -> a message with settings that would fit, from the VRAM estimate.

The suggestions are cumulative and ordered by what they cost: first the ones that are nearly
free (gradient checkpointing, cached latents, an 8-bit optimizer), then the ones that change the
training (cached text outputs, which mean UNet-only; smaller batches; lower rank; lower
resolution). The first set whose estimate fits the GPU is offered.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Callable, Optional

from engine.config.rules import FUSED_OPTIMIZERS
from engine.errors import OutOfVideoMemory
from engine.plan.vram import GB, estimate_vram

if TYPE_CHECKING:
    from engine.config.schema import RunConfig

FIT_FRACTION = 0.92  # leave room for fragmentation and other processes


@dataclass(frozen=True)
class Suggestion:
    """One change that lowers GPU memory: how the person sets it, how it changes the (cfg, plan) estimate, and when
    it applies."""
    setting: str  # how the person sets it (config key = value, or the dataset TOML's)
    apply: Callable[[Any, Any], tuple[Any, Any]]  # (cfg, plan) -> (cfg, plan)
    applies: Callable[[Any, Any], bool]


def _with(**values):
    return lambda cfg, plan: (cfg.with_values(**values), plan)


def _batch_one(cfg, plan):
    return cfg, SimpleNamespace(buckets=[SimpleNamespace(bucket=b.bucket, batch_size=1) for b in _buckets(plan)])


def _resolution(side: int):
    def apply(cfg, plan):
        scaled = []
        for b in _buckets(plan):
            w, h = b.bucket
            factor = min(1.0, side / max(w, h))
            scaled.append(SimpleNamespace(bucket=(int(w * factor) // 64 * 64, int(h * factor) // 64 * 64),
                                          batch_size=b.batch_size))
        return cfg, SimpleNamespace(buckets=scaled)

    return apply


def _buckets(plan) -> list:
    found = list(getattr(plan, "buckets", ()) or ())
    return found or [SimpleNamespace(bucket=(1024, 1024), batch_size=1)]


SUGGESTIONS = (
    Suggestion("gradient_checkpointing = true", _with(gradient_checkpointing=True),
               lambda c, p: not c.precision.gradient_checkpointing),
    Suggestion("cache_latents = true", _with(cache_latents=True), lambda c, p: not c.caching.cache_latents),
    Suggestion('optimizer_type = "AdamW8bit"', _with(optimizer_type="AdamW8bit"),
               # not from Prodigy/D-Adaptation: their learning_rate (about 1.0) is a multiplier, not a rate
               lambda c, p: c.optimizer.optimizer_type in ("AdamW", "PagedAdamW", "PagedAdamW32bit")),
    Suggestion("fused_backward_pass = true", _with(fused_backward_pass=True),
               lambda c, p: (not c.precision.fused_backward_pass and c.optimizer.optimizer_type in FUSED_OPTIMIZERS
                             and c.training.gradient_accumulation_steps == 1)),
    Suggestion("cache_text_encoder_outputs = true with network_train_unet_only = true",
               _with(cache_text_encoder_outputs=True, network_train_unet_only=True),
               lambda c, p: not c.caching.cache_text_encoder_outputs),
    Suggestion("batch_size = 1 in the dataset TOML (raise gradient_accumulation_steps to keep the effective batch)",
               _batch_one, lambda c, p: any(b.batch_size > 1 for b in _buckets(p))),
    Suggestion("network_dim = 8", _with(network_dim=8, network_alpha=4.0), lambda c, p: c.network.network_dim > 8),
    Suggestion("resolution = 768 in the dataset TOML", _resolution(768),
               lambda c, p: any(max(b.bucket) > 768 for b in _buckets(p))),
)


@dataclass(frozen=True)
class FitAdvice:
    """Advice after an out-of-memory error: the estimate that ran out, the card's size, the changes in order and the
    estimate with them (GB = 1e9 bytes)."""
    estimate_gb: float  # the estimate for the settings that ran out
    device_gb: Optional[float]
    settings: tuple[str, ...]  # the changes, in order
    fitted_gb: float  # the estimate with them
    fits: bool


def advise(cfg: RunConfig, plan=None, device_gb: Optional[float] = None) -> FitAdvice:
    """The fewest cumulative changes (in SUGGESTIONS' order) whose estimate fits `device_gb`;
    all of them when none fits. Without a device size, every applicable change is listed."""
    estimate = estimate_vram(cfg, plan).total
    budget = device_gb * FIT_FRACTION if device_gb else 0.0
    chosen: list[str] = []
    current_cfg, current_plan, total = cfg, plan, estimate
    for suggestion in SUGGESTIONS:
        if budget and total <= budget and chosen:
            break
        if not suggestion.applies(current_cfg, current_plan):
            continue
        current_cfg, current_plan = suggestion.apply(current_cfg, current_plan)
        total = estimate_vram(current_cfg, current_plan).total
        chosen.append(suggestion.setting)
    return FitAdvice(estimate, device_gb, tuple(chosen), total, bool(budget) and total <= budget)


def oom_error(cfg: RunConfig, plan=None, device_gb: Optional[float] = None, *, step: int = 0,
              state_saved: str = "") -> OutOfVideoMemory:
    """`step`: the last step completed (the one that failed is the next)."""
    advice = advise(cfg, plan, device_gb)
    gpu = f"the GPU has {device_gb:.1f} GB" if device_gb else "the GPU's size is unknown"
    where = f"during step {step + 1}"
    saved = f"; the state was saved ({state_saved}), so resume after changing what may change" if state_saved else ""
    message = (f"CUDA ran out of memory {where} (estimated need {advice.estimate_gb:.1f} GB, {gpu}){saved}")
    if not advice.settings:
        hint = "no setting left to lower: use a GPU with more memory"
    elif not device_gb:
        hint = (f"these lower the memory need (estimate {advice.fitted_gb:.1f} GB with all of them): "
                + "; ".join(advice.settings))
    elif advice.fits:
        hint = (f"these settings should fit (estimate {advice.fitted_gb:.1f} GB): " + "; ".join(advice.settings)
                + " — see `sdxl-tui plan` for the breakdown")
    else:
        hint = ("even with " + "; ".join(advice.settings) + f" the estimate is {advice.fitted_gb:.1f} GB: "
                "this GPU is too small for SDXL LoRA training at these sizes")
    return OutOfVideoMemory(message, hint=hint, step=step)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, or a RuntimeError saying "CUDA out of memory" (older torch)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    kind = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (kind is not None and isinstance(exc, kind)) or (
        isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc))


def device_memory_gb(device) -> Optional[float]:
    """The CUDA device's total memory in GB (1e9 bytes); None for another device or when it cannot be read."""
    try:
        import torch

        if getattr(device, "type", str(device)) == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_properties(device).total_memory / GB
    except Exception:  # the size is only advice
        return None
    return None
