"""SDXL conditioning from captions, and the VAE's image -> latent step.

SDXL feeds the UNet two things from text: the concatenated penultimate hidden states of both
text encoders (CLIP ViT-L 768 wide + OpenCLIP bigG 1280 wide -> 2048) as cross-attention
context, and text encoder 2's projected pooled output (1280) as part of the added embedding.
Both encoders see 77 tokens; tokenizer 2 pads with `!` (its own pad token, id 0), which keeps
CLIP's end-of-text pooling on the real end token.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from engine.model.load import SdxlModel

MAX_TOKENS = 77
WINDOW_TOKENS = 75  # caption tokens in one window; `model.max_token_length` 150 / 225 -> long_prompts.py


def _sequence_length(tokenizer: Any, encoder: Any) -> int:
    """77 for SDXL; a tiny test model may have fewer position embeddings."""
    limit = getattr(getattr(encoder, "config", None), "max_position_embeddings", MAX_TOKENS)
    return min(MAX_TOKENS, int(limit))


def tokenize(tokenizer: Any, encoder: Any, captions: list[str]) -> "torch.Tensor":
    """Token ids (B, 77), padded with the tokenizer's own pad token and truncated."""
    ids = tokenizer(
        captions,
        padding="max_length",
        max_length=_sequence_length(tokenizer, encoder),
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return ids


def _wants_grad(module: Any) -> bool:
    """Grad mode is on and the encoder trains: a parameter of its own, or a LoRA adapter that
    replaced a layer's `forward` (engine/lora/network.py keeps adapters outside the encoder's tree,
    so its own parameters are all frozen even when its LoRA trains)."""
    import torch

    if not torch.is_grad_enabled():
        return False
    for part in module.modules():
        if any(p.requires_grad for p in part.parameters(recurse=False)):
            return True
        adapter = getattr(part.__dict__.get("forward"), "__self__", None)
        if isinstance(adapter, torch.nn.Module) and any(p.requires_grad for p in adapter.parameters()):
            return True
    return False


def _module_device(module: Any) -> "torch.device":
    return next(module.parameters()).device


def encode_captions(model: SdxlModel, captions: list[str], device: Any, dtype: Optional["torch.dtype"] = None
                    ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """(hidden (B, 77, w1 + w2), pooled (B, proj)) for `captions`, as SDXL's UNet expects them
    (hidden (B, 2 + 75 n, w1 + w2) when `model.max_token_length` is 150 or 225: long_prompts.py).

    Runs through the encoders as they are (LoRA-injected ones included); autograd records
    the pass only when an encoder has trainable parameters and grad mode is on, so caching
    and sampling never build a graph. The encoders must already be on `device`.
    """
    import torch

    te1, te2 = model.text_encoder1, model.text_encoder2
    max_token_length = getattr(model, "max_token_length", None)
    long = bool(max_token_length and max_token_length > WINDOW_TOKENS)
    weights1 = weights2 = None
    if getattr(model, "weighted_captions", False):  # rules refuse it with long captions
        from engine.model.weighted_captions import weighted_ids

        ids1, weights1 = weighted_ids(model.tokenizer1, captions, _sequence_length(model.tokenizer1, te1))
        ids2, weights2 = weighted_ids(model.tokenizer2, captions, _sequence_length(model.tokenizer2, te2))
        ids1, ids2 = ids1.to(device), ids2.to(device)
    elif long:
        from engine.model.long_prompts import window_ids

        ids1 = window_ids(model.tokenizer1, captions, max_token_length).to(device)
        ids2 = window_ids(model.tokenizer2, captions, max_token_length).to(device)
    else:
        ids1 = tokenize(model.tokenizer1, te1, captions).to(device)
        ids2 = tokenize(model.tokenizer2, te2, captions).to(device)

    with torch.set_grad_enabled(_wants_grad(te1)):
        out1 = te1(ids1, output_hidden_states=True)
        hidden1 = out1.hidden_states[-2]
    with torch.set_grad_enabled(_wants_grad(te2)):
        out2 = te2(ids2, output_hidden_states=True)
        hidden2 = out2.hidden_states[-2]
        pooled = out2.text_embeds

    if long:
        from engine.model.long_prompts import join_windows, windows_per_caption

        hidden1, hidden2 = join_windows(hidden1, len(captions)), join_windows(hidden2, len(captions))
        pooled = pooled[::windows_per_caption(max_token_length)]
    if weights1 is not None:  # per-token caption weights; the pooled embedding stays unweighted
        hidden1 = hidden1 * weights1.to(hidden1.device, hidden1.dtype).unsqueeze(-1)
        hidden2 = hidden2 * weights2.to(hidden2.device, hidden2.dtype).unsqueeze(-1)
    if hidden1.dtype != hidden2.dtype:
        hidden1 = hidden1.to(hidden2.dtype)
    hidden = torch.cat([hidden1, hidden2], dim=-1)
    if dtype is not None:
        hidden, pooled = hidden.to(dtype), pooled.to(dtype)
    return hidden, pooled


def vae_encode(vae: Any, pixels: "torch.Tensor", generator: Optional["torch.Generator"] = None
               ) -> "torch.Tensor":
    """Latents (B, 4, H/8, W/8), already multiplied by the VAE's scaling factor.

    `pixels` is (B, 3, H, W) in [-1, 1]. The latent is a sample of the encoder's
    distribution (as sd-scripts caches it), drawn from `generator` when given, computed in
    the VAE's own dtype (fp32 with no_half_vae) and returned in that dtype.
    """
    import torch

    device = _module_device(vae)
    with torch.no_grad():
        pixels = pixels.to(device=device, dtype=vae.dtype)
        dist = vae.encode(pixels).latent_dist
        latents = dist.sample(generator=generator)
    return latents * vae.config.scaling_factor
