"""Sample images during training, with the LoRA applied, without disturbing the training.

The LoRA modules live inside the UNet and text encoders, so a diffusers
`StableDiffusionXLPipeline` built from the loaded parts generates with them. Before
generating, every random number generator, each submodule's train/eval flag and each part's
device are recorded; afterwards they are put back, so a run with a sample in the middle
trains exactly like a run without one.

Files: `<out_dir>/sample/{output_name}_{step:06d}_{index:02d}_{timestamp}[_{seed}].png`, or
`..._e{epoch:06d}_...` when `epoch` is given (an end-of-epoch sample), as sd-scripts names
them. Each PNG carries its settings in an A1111-style `parameters` text chunk.
"""
from __future__ import annotations

import io
import random
import secrets
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

from engine.config.sample_prompts import SamplePrompt
from engine.errors import ConfigError
from engine.model.encode import encode_captions
from engine.storage.atomic import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from engine.model.load import SdxlModel

# sd-scripts' sample_sampler names -> (diffusers scheduler class, extra config).
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # as SD pipelines ship it; PRK needs >= 4 steps
    "lms": ("LMSDiscreteScheduler", {}),
    "k_lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "k_euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "k_euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsingle": ("DPMSolverSinglestepScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_2": ("KDPM2DiscreteScheduler", {}),
    "k_dpm_2": ("KDPM2DiscreteScheduler", {}),
    "dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "k_dpm_2_a": ("KDPM2AncestralDiscreteScheduler", {}),
}


def make_sampler_scheduler(name: str, scheduler_config: Any) -> Any:
    """A fresh diffusers scheduler for an sd-scripts sampler name, from the model's config."""
    import diffusers

    key = name.lower()
    if key not in SAMPLERS:
        raise ConfigError(f"unknown sample_sampler '{name}'", key="sample_sampler",
                          hint="one of: " + ", ".join(sorted(SAMPLERS)))
    class_name, extra = SAMPLERS[key]
    try:
        return getattr(diffusers, class_name).from_config(scheduler_config, **extra)
    except ImportError as exc:  # LMS needs scipy, an optional package
        raise ConfigError(f"sample_sampler '{name}' needs a package that is not installed ({exc})".strip(),
                          key="sample_sampler", hint="pip install scipy, or choose another sampler") from None


def sample_file_name(output_name: str, *, step: int, epoch: Optional[int], index: int,
                     seed: Optional[int], timestamp: str) -> str:
    """sd-scripts' sample image name: [output_name_]{step:06d or e{epoch:06d}}_{index:02d}_{timestamp}[_{seed}].png."""
    number = f"e{epoch:06d}" if epoch is not None else f"{step:06d}"
    prefix = f"{output_name}_" if output_name else ""
    seed_part = f"_{seed}" if seed is not None else ""
    return f"{prefix}{number}_{index:02d}_{timestamp}{seed_part}.png"


# ---- keeping training untouched -------------------------------------------------------------

@dataclass
class _RngState:
    python: Any
    numpy: Any
    torch_cpu: Any
    cuda: Optional[list]


def _capture_rng() -> _RngState:
    import numpy as np
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return _RngState(random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda)


def _restore_rng(state: _RngState) -> None:
    import numpy as np
    import torch

    random.setstate(state.python)
    np.random.set_state(state.numpy)
    torch.set_rng_state(state.torch_cpu)
    if state.cuda is not None:
        torch.cuda.set_rng_state_all(state.cuda)


def _device_of(module: Any) -> "torch.device":
    return next(module.parameters()).device


def unwrap(module: Any) -> Any:
    """The plain module under DDP (`.module`) or torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(module, "_orig_mod", None)
        if inner is None:
            inner = getattr(module, "module", None)
        if inner is None or inner is module:
            return module
        module = inner


@contextmanager
def parts_on_device_for_inference(modules: list[Any], device: Any) -> Iterator[None]:
    """Move `modules` to `device` in eval mode; restore devices, modes and RNG afterwards."""
    import torch

    rng = _capture_rng()
    modes = [(sub, sub.training) for module in modules for sub in module.modules()]
    homes = [(module, _device_of(module)) for module in modules]
    try:
        for module in modules:
            module.to(device)
            module.eval()
        yield
    finally:
        for module, home in homes:
            module.to(home)
        for sub, was_training in modes:
            sub.training = was_training
        _restore_rng(rng)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


# ---- generating ------------------------------------------------------------------------------

def _autocast(device: Any, dtype: Optional["torch.dtype"]) -> Any:
    import contextlib

    import torch

    device_type = torch.device(device).type
    if dtype in (torch.float16, torch.bfloat16):
        return torch.autocast(device_type=device_type, dtype=dtype)
    return contextlib.nullcontext()


def _conditioning(model: SdxlModel, prompt: SamplePrompt, device: Any, force_zeros: bool) -> dict[str, Any]:
    import torch

    hidden, pooled = encode_captions(model, [prompt.prompt], device)
    if prompt.negative_prompt or not force_zeros:
        neg_hidden, neg_pooled = encode_captions(model, [prompt.negative_prompt], device)
    else:  # SDXL's pipelines use zeros for an empty negative prompt
        neg_hidden, neg_pooled = torch.zeros_like(hidden), torch.zeros_like(pooled)
    return {"prompt_embeds": hidden, "pooled_prompt_embeds": pooled,
            "negative_prompt_embeds": neg_hidden, "negative_pooled_prompt_embeds": neg_pooled}


def _decode_to_pil(vae: Any, latents: "torch.Tensor") -> Any:
    """Decode outside autocast in the VAE's own dtype (fp32 with no_half_vae)."""
    import torch
    from PIL import Image

    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    original = vae.dtype
    if upcast:
        vae.to(torch.float32)
    try:
        with torch.no_grad():
            scaled = latents.to(vae.dtype) / vae.config.scaling_factor
            image = vae.decode(scaled).sample
    finally:
        if upcast:
            vae.to(original)
    array = ((image[0].float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())


def _png_bytes(image: Any, prompt: SamplePrompt, sampler: str, seed: int) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    width, height = prompt.rounded_size
    text = prompt.prompt
    if prompt.negative_prompt:
        text += f"\nNegative prompt: {prompt.negative_prompt}"
    text += (f"\nSteps: {prompt.sample_steps}, Sampler: {sampler}, CFG scale: {prompt.scale}, "
             f"Seed: {seed}, Size: {width}x{height}")
    info = PngInfo()
    info.add_text("parameters", text)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _sample_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir if out_dir.name == "sample" else out_dir / "sample"


def generate_samples(model: SdxlModel, prompts: list[SamplePrompt], *, out_dir: str | Path, output_name: str,
                     step: int, epoch: Optional[int], sampler: str, device: Any,
                     dtype: Optional["torch.dtype"]) -> list[tuple[Path, str]]:
    """Generate one PNG per prompt with the live (LoRA-injected) model; returns (path, prompt).

    `out_dir` is the run's output_dir (files go to its `sample/` folder). `epoch` names the
    files by epoch (end-of-epoch samples); leave it None to name them by step. Generation
    runs under autocast in `dtype` when that is fp16/bf16.
    """
    import torch
    from diffusers import StableDiffusionXLPipeline

    unet, te1, te2, vae = (unwrap(m) for m in (model.unet, model.text_encoder1, model.text_encoder2, model.vae))
    folder = _sample_dir(Path(out_dir))
    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, str]] = []
    with parts_on_device_for_inference([unet, te1, te2, vae], device):
        pipeline = StableDiffusionXLPipeline(
            vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=model.tokenizer1,
            tokenizer_2=model.tokenizer2, unet=unet,
            scheduler=make_sampler_scheduler(sampler, model.noise_scheduler.config),
            add_watermarker=False)
        pipeline.set_progress_bar_config(disable=True)
        force_zeros = bool(pipeline.config.force_zeros_for_empty_prompt)
        for prompt in prompts:
            name = prompt.sample_sampler or sampler
            pipeline.scheduler = make_sampler_scheduler(name, model.noise_scheduler.config)
            seed = prompt.seed if prompt.seed is not None else secrets.randbelow(2**32)
            width, height = prompt.rounded_size
            with torch.no_grad(), _autocast(device, dtype):
                conditioning = _conditioning(_text_side(model, te1, te2), prompt, device, force_zeros)
                latents = pipeline(
                    height=height, width=width, num_inference_steps=prompt.sample_steps,
                    guidance_scale=prompt.scale, generator=torch.Generator("cpu").manual_seed(seed),
                    output_type="latent", **conditioning).images
            image = _decode_to_pil(vae, latents)
            file_name = sample_file_name(output_name, step=step, epoch=epoch, index=prompt.index,
                                         seed=prompt.seed, timestamp=time.strftime("%Y%m%d%H%M%S"))
            path = atomic_write_bytes(folder / file_name, _png_bytes(image, prompt, name, seed))
            written.append((path, prompt.prompt))
        del pipeline
    return written


@dataclass(frozen=True)
class _TextParts:
    text_encoder1: Any
    text_encoder2: Any
    tokenizer1: Any
    tokenizer2: Any
    max_token_length: Any = None  # sample prompts are encoded like captions (sd-scripts does the same)


def _text_side(model: SdxlModel, te1: Any, te2: Any) -> _TextParts:
    """The text side of `model` with unwrapped encoders, for `encode_captions`."""
    return _TextParts(te1, te2, model.tokenizer1, model.tokenizer2, getattr(model, "max_token_length", None))
