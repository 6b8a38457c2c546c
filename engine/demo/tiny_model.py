"""The built-in tiny SDXL: SDXL's exact topology at a width that trains in seconds on a CPU.

`build_tiny_model` writes, offline and from a seed, a randomly initialised model in two
forms: a diffusers folder (`StableDiffusionXLPipeline.from_pretrained` loads it) and one
single-file `.safetensors` checkpoint in the original SDXL key layout. Everything that
depends on layer names or shapes (LoRA naming, single-file conversion, caching, sampling)
can then be tested on the same code paths the real 6.9 GB model takes.

What is kept from SDXL, and why it matters for tests:
- UNet block types, `layers_per_block=2`, linear projections, one head size for all
  levels, `text_time` added conditioning with 6 time ids of 256 each;
- text encoder 1 is CLIP-L-shaped (12 layers, quick_gelu, no projection), text encoder 2 is
  bigG-shaped (gelu, projection) with width != projection size so a missing transpose of
  `text_projection` fails loudly; cross-attention width is the sum of the two widths;
- both tokenizers pad to 77 tokens, the second with `!` (id 0) as SDXL's does;
- a 4-level VAE (downscale 8, 4 latent channels, scaling factor 0.13025);
- SDXL base's scheduler config.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.model.sdxl_configs import SCHEDULER_CONFIG
from engine.storage.atomic import atomic_save_safetensors

BASE_CHANNELS = 32
TE1_WIDTH, TE1_LAYERS, TE1_HEADS = 32, 12, 4
# 10 layers so the key diffusers uses to recognise SDXL base (`...resblocks.9...`) exists.
TE2_WIDTH, TE2_LAYERS, TE2_HEADS, TE2_PROJECTION = 48, 10, 4, 40
TIME_ID_WIDTH = 256  # SDXL's addition_time_embed_dim
HEAD_SIZE = 16
MAX_TOKENS = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


MODEL_INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "force_zeros_for_empty_prompt": True,
    "feature_extractor": [None, None],
    "image_encoder": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}


@dataclass(frozen=True)
class TinyModelPaths:
    """The tiny model as a diffusers folder and as one .safetensors file."""
    diffusers_dir: Path
    single_file: Path


@dataclass
class TinyModules:
    """The four tiny models in memory (random weights), as `build_tiny_model` writes them."""

    unet: Any
    vae: Any
    text_encoder1: Any
    text_encoder2: Any


# ---------------------------------------------------------------- tokenizer

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table, in CLIP's vocab order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return {b: table[b] for b in printable + [b for b in range(256) if b not in printable]}


def learn_bpe(words: list[str]) -> list[tuple[str, str]]:
    """Merges that turn each word into one token: plain BPE (most frequent pair first)."""
    byte_chars = bytes_to_unicode()
    corpus: list[list[str]] = []
    for word in words:
        symbols = [byte_chars[b] for b in word.lower().encode("utf-8")]
        symbols[-1] += "</w>"
        corpus.append(symbols)
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for symbols in corpus:
            for pair in zip(symbols, symbols[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for i, symbols in enumerate(corpus):
            corpus[i] = _apply_merge(symbols, best)


def _apply_merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocab order: bytes, bytes + `</w>`, merge results, then the two specials.
    `!` is the first byte character, so its id is 0, as in SDXL's tokenizer_2 pad token."""
    tokens = list(bytes_to_unicode().values())
    tokens += [t + "</w>" for t in tokens]
    tokens += ["".join(pair) for pair in merges]
    tokens += [BOS, EOS]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


def write_tokenizer(folder: Path, words: list[str], pad_token: str) -> int:
    """Write vocab.json + merges.txt, then let transformers add its config; return vocab size."""
    from transformers import CLIPTokenizer

    merges = learn_bpe(words)
    vocab = build_vocab(merges)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merge_lines = ["#version: 0.2"] + [f"{a} {b}" for a, b in merges]
    (folder / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab=vocab, merges=list(merges),
        bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=pad_token,
        model_max_length=MAX_TOKENS,
    )
    tokenizer.save_pretrained(str(folder))
    return len(vocab)


# ---------------------------------------------------------------- configs

def unet_config(base: int = BASE_CHANNELS) -> dict:
    """diffusers UNet2DConditionModel config shaped like SDXL's (same block types, 2048-wide cross-attention,
    text_time embedding) at tiny width `base`."""
    channels = [base, base * 2, base * 4]
    return {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": channels,
        "layers_per_block": 2,
        "transformer_layers_per_block": [1, 2, 2],
        # diffusers' historical naming: this list is the head COUNT per level; SDXL's is
        # [5, 10, 20] with 64-wide heads; here every level has HEAD_SIZE-wide heads.
        "attention_head_dim": [c // HEAD_SIZE for c in channels],
        "cross_attention_dim": TE1_WIDTH + TE2_WIDTH,
        "use_linear_projection": True,
        "upcast_attention": False,
        "norm_num_groups": 8,
        "addition_embed_type": "text_time",
        "addition_embed_type_num_heads": 64,
        "addition_time_embed_dim": TIME_ID_WIDTH,
        "projection_class_embeddings_input_dim": TE2_PROJECTION + 6 * TIME_ID_WIDTH,
    }


def vae_config() -> dict:
    """diffusers AutoencoderKL config with SDXL's layout (4 latent channels, 8x downscale, scaling factor 0.13025) at
    tiny width."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [8, 16, 32, 32],
        "layers_per_block": 2,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "sample_size": 64,
        "scaling_factor": 0.13025,
        "force_upcast": True,
    }


def text_encoder_config(width: int, layers: int, heads: int, act: str, projection: int,
                        vocab_size: int, pad_id: int):
    """transformers CLIPTextConfig for a tiny text encoder; bos/eos are the last two token ids of the vocabulary."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 4,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=MAX_TOKENS,
        hidden_act=act, projection_dim=projection, layer_norm_eps=1e-5,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=pad_id,
    )


# ---------------------------------------------------------------- build

def _prompt_words() -> list[str]:
    from engine.demo.dataset import caption_words

    return caption_words()


def tiny_vocab_size() -> int:
    """How many tokens the tiny model's tokenizer has (its BPE learnt from the demo prompts)."""
    return len(build_vocab(learn_bpe(_prompt_words())))


def make_tiny_modules(seed: int = 0, vocab_size: int | None = None) -> TinyModules:
    """The tiny models in memory, without writing files (same tensors as the built model)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    vocab = vocab_size or tiny_vocab_size()
    # fork_rng: seed the init without changing the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config())
        vae = AutoencoderKL(**vae_config())
        te1 = CLIPTextModel(text_encoder_config(
            TE1_WIDTH, TE1_LAYERS, TE1_HEADS, "quick_gelu", TE1_WIDTH, vocab, vocab - 1))
        te2 = CLIPTextModelWithProjection(text_encoder_config(
            TE2_WIDTH, TE2_LAYERS, TE2_HEADS, "gelu", TE2_PROJECTION, vocab, 0))
    return TinyModules(unet, vae, te1, te2)


def _write_diffusers_folder(folder: Path, models: TinyModules, words: list[str]) -> None:
    import diffusers

    from engine.model.library_bars import transformers_bars_off

    models.unet.save_pretrained(folder / "unet")
    models.vae.save_pretrained(folder / "vae")
    with transformers_bars_off():
        models.text_encoder1.save_pretrained(folder / "text_encoder")
        models.text_encoder2.save_pretrained(folder / "text_encoder_2")
    (folder / "scheduler").mkdir()
    scheduler = {**SCHEDULER_CONFIG, "_diffusers_version": diffusers.__version__}
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    write_tokenizer(folder / "tokenizer", words, pad_token=EOS)
    write_tokenizer(folder / "tokenizer_2", words, pad_token="!")
    index = {"_diffusers_version": diffusers.__version__, **MODEL_INDEX}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    readme = ("# tiny-sdxl\n\nRandomly initialised, SDXL-shaped model for tests and demos "
              "(built by `sdxl-tui make-tiny-model`). It draws noise; it is not a real model.\n")
    (folder / "README.md").write_text(readme)


def _replace_dir(staging: Path, final: Path) -> None:
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def build_tiny_model(out_dir: Path | str, seed: int = 0) -> TinyModelPaths:
    """Write out_dir/tiny-sdxl/ (diffusers) and out_dir/tiny-sdxl.safetensors (single file).

    The same seed gives the same tensors. A crash leaves any previous build intact: the
    folder is staged beside its final name and renamed into place.
    """
    from engine.model.single_file import diffusers_to_single_file

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    words = _prompt_words()
    # The vocab is the same for both tokenizers; only the pad token differs.
    models = make_tiny_modules(seed, len(build_vocab(learn_bpe(words))))

    final = out / "tiny-sdxl"
    staging = out / ".tiny-sdxl.staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _write_diffusers_folder(staging, models, words)
    _replace_dir(staging, final)

    tensors = diffusers_to_single_file(
        models.unet.state_dict(), dict(models.unet.config), models.vae.state_dict(),
        models.text_encoder1.state_dict(), models.text_encoder2.state_dict())
    metadata = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-xl-v1-base",
        "modelspec.title": "tiny-sdxl (random weights, for tests)",
        "modelspec.resolution": "64x64",
    }
    single = atomic_save_safetensors(out / "tiny-sdxl.safetensors", tensors, metadata)
    return TinyModelPaths(final, single)
