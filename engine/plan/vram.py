"""GPU memory estimate for an SDXL LoRA run, without loading a model.

Figures (GB = 1e9 bytes) are calibrated to the reported ones: at 1024², batch 1, latents and
text-encoder outputs cached, bf16 with gradient checkpointing, LoRA rank 16 with fp32 AdamW
state comes to ≈ 7.5 GB (UNet weights 5.13, LoRA + state 0.68, activations ≈ 1, context and
slack ≈ 0.75). Activation memory scales with pixels × batch size; the rest is counted.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.units import GB  # 1e9 bytes, the unit of every figure here

if TYPE_CHECKING:
    from engine.config.schema import RunConfig

UNET_PARAMS = 2.567e9
TE1_PARAMS = 123.06e6  # CLIP ViT-L/14 text model
TE2_PARAMS = 694.66e6  # OpenCLIP ViT-bigG/14 text model + projection
VAE_PARAMS = 83.65e6
ACTIVATIONS_PER_MPIXEL_CHECKPOINTED = 1.0 / 1.048576  # GB per million pixels per image (bf16)
ACTIVATIONS_PER_MPIXEL_FULL = 6.5 / 1.048576
VAE_ENCODE_PER_MPIXEL = 1.2 / 1.048576  # GB peak while encoding one image in half precision
TE_TRAIN_ACTIVATIONS = 0.25  # GB per sample when text-encoder LoRA trains (77 tokens, both encoders)
CONTEXT_AND_SLACK = 0.75

# Bytes of optimizer state per trainable (fp32) parameter.
OPTIMIZER_STATE_BYTES = {
    "AdamW": 8, "AdamW8bit": 2, "PagedAdamW8bit": 2, "Lion": 4, "Lion8bit": 1, "PagedLion8bit": 1,
    "Adafactor": 1, "SGD": 4, "Prodigy": 16,
    # the moments each package keeps (fp32 unless 8-bit)
    "PagedAdamW": 8, "PagedAdamW32bit": 8, "SGDNesterov": 4, "SGDNesterov8bit": 1, "AdEMAMix8bit": 3,
    "PagedAdEMAMix8bit": 3, "DAdaptation": 12, "DAdaptAdamPreprint": 12, "DAdaptAdam": 12, "DAdaptLion": 8,
    "DAdaptAdaGrad": 12, "DAdaptAdan": 20, "DAdaptAdanIP": 20, "DAdaptSGD": 12, "RAdamScheduleFree": 8,
    "AdamWScheduleFree": 8, "SGDScheduleFree": 4,
}

# SDXL UNet transformer blocks: (channels, number of BasicTransformerBlocks, number of Transformer2D containers)
_TRANSFORMER_LEVELS = ((640, 2 * 2 + 3 * 2, 2 + 3), (1280, 2 * 10 + 10 + 3 * 10, 2 + 1 + 3))
_CROSS_DIM = 2048
# ResNet blocks (in, out) for LoCon (conv_dim), down, mid, up.
_RESNETS = ((320, 320), (320, 320), (320, 640), (640, 640), (640, 1280), (1280, 1280), (1280, 1280), (1280, 1280),
            (2560, 1280), (2560, 1280), (1920, 1280), (1920, 640), (1280, 640), (960, 640),
            (960, 320), (640, 320), (640, 320))
_SAMPLERS = (320, 640, 1280, 640)  # 3x3 convs of the two downsamplers and two upsamplers


def unet_lora_params(rank: int, conv_dim: int | None = None) -> int:
    """LoRA parameters over SDXL's 722 UNet modules (each: rank × (in + out)), plus LoCon's
    ResNet and sampler convs when conv_dim is set."""
    per_rank = 0
    for c, blocks, containers in _TRANSFORMER_LEVELS:
        attn1 = 4 * (c + c)
        attn2 = 2 * (c + c) + 2 * (_CROSS_DIM + c)
        ff = (c + 8 * c) + (4 * c + c)  # GEGLU projects to 2 x 4c
        per_rank += blocks * (attn1 + attn2 + ff) + containers * 2 * (c + c)  # + proj_in/proj_out
    total = per_rank * rank
    if conv_dim:
        for cin, cout in _RESNETS:
            total += conv_dim * (9 * cin + cout) + conv_dim * (9 * cout + cout)
            total += rank * (1280 + cout) + (rank * (cin + cout) if cin != cout else 0)
        total += sum(conv_dim * (9 * c + c) for c in _SAMPLERS)
    return total


def text_encoder_lora_params(rank: int) -> int:
    """Trainable parameters of the text encoders' LoRA at `rank`: per layer, rank·(in + out) for q, k, v, out and the
    two MLP layers; 12 CLIP ViT-L layers (768 wide, MLP 3072) and 32 OpenCLIP bigG layers (1280, MLP 5120)."""
    te1 = 12 * (4 * (768 + 768) + 2 * (768 + 3072))
    te2 = 32 * (4 * (1280 + 1280) + 2 * (1280 + 5120))
    return (te1 + te2) * rank


@dataclass(frozen=True)
class VramEstimate:
    """A GPU memory estimate by part, in GB (1e9 bytes), for the largest bucket (w, h) in pixels at `batch_size`."""
    unet_weights: float
    lora_and_optimizer: float
    text_encoders: float
    vae: float
    activations: float
    context_and_slack: float
    lora_params: int
    resolution: tuple[int, int]  # the largest bucket (w, h) the estimate assumes
    batch_size: int

    @property
    def total(self) -> float:
        """The whole estimate in GB (1e9 bytes)."""
        return (self.unet_weights + self.lora_and_optimizer + self.text_encoders + self.vae + self.activations
                + self.context_and_slack)

    def breakdown(self) -> list[tuple[str, float]]:
        """(part, GB) pairs in display order."""
        return [("UNet weights", self.unet_weights), ("LoRA + optimizer state", self.lora_and_optimizer),
                ("text encoders", self.text_encoders), ("VAE", self.vae), ("activations", self.activations),
                ("CUDA context + slack", self.context_and_slack)]


def _largest_bucket(plan) -> tuple[tuple[int, int], int]:
    """(largest bucket by area, its dataset's batch size) from a Plan; 1024² batch 1 without data."""
    best = ((1024, 1024), 1)
    best_area = 0
    for entry in getattr(plan, "buckets", ()):
        area = entry.bucket[0] * entry.bucket[1] * entry.batch_size
        if area > best_area:
            best, best_area = (entry.bucket, entry.batch_size), area
    return best


def estimate_vram(cfg: RunConfig, plan=None) -> VramEstimate:
    """GB per component for `cfg` (a RunConfig) at the plan's largest bucket × batch size."""
    half = cfg.precision.mixed_precision in ("fp16", "bf16")
    compute_bytes = 2 if half else 4
    (w, h), batch = _largest_bucket(plan)
    mpixels = w * h / 1e6

    rank = cfg.network.network_dim
    lora = unet_lora_params(rank, cfg.network.conv_dim)
    train_te = not cfg.network.network_train_unet_only
    if train_te:
        lora += text_encoder_lora_params(rank)
    p = cfg.precision
    lora_bytes = 2 if (p.full_fp16 or p.full_bf16) else 4  # full_fp16 / full_bf16: half-precision LoRA
    grad_bytes = 0 if p.fused_backward_pass else lora_bytes
    state = OPTIMIZER_STATE_BYTES.get(cfg.optimizer.optimizer_type, 8)
    lora_gb = lora * (lora_bytes + grad_bytes + state) / GB
    # fp8_base / fp8_base_unet: frozen Linear/Conv weights (nearly all of them) stored in one byte
    unet_bytes = 1 if (p.fp8_base or p.fp8_base_unet) and half else compute_bytes
    te_bytes = 1 if p.fp8_base and half else compute_bytes

    text_gb = 0.0
    if not cfg.caching.cache_text_encoder_outputs:
        text_gb = (TE1_PARAMS + TE2_PARAMS) * te_bytes / GB
        if train_te:
            text_gb += TE_TRAIN_ACTIVATIONS * batch
    vae_gb = 0.0
    if not cfg.caching.cache_latents:
        vae_half = half and not cfg.precision.no_half_vae
        vae_gb = VAE_PARAMS * (2 if vae_half else 4) / GB
        vae_gb += VAE_ENCODE_PER_MPIXEL * mpixels * batch * (1 if vae_half else 2)

    per_mpixel = (ACTIVATIONS_PER_MPIXEL_CHECKPOINTED if cfg.precision.gradient_checkpointing
                  else ACTIVATIONS_PER_MPIXEL_FULL)
    activations = per_mpixel * mpixels * batch * (1 if half else 2)
    return VramEstimate(
        unet_weights=UNET_PARAMS * unet_bytes / GB, lora_and_optimizer=lora_gb, text_encoders=text_gb,
        vae=vae_gb, activations=activations, context_and_slack=CONTEXT_AND_SLACK, lora_params=lora,
        resolution=(w, h), batch_size=batch)
