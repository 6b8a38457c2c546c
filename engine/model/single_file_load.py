"""Load SDXL from one original-layout `.safetensors` file (used by engine.model.source).

A single file holds weights only, so configs and tokenizers come from elsewhere:
1. `tokenizer_cache_dir`: tokenizers in `tokenizer/` + `tokenizer_2/`, and, when present,
   the diffusers configs (`unet/config.json`, `vae/config.json`, `text_encoder*/config.json`,
   `scheduler/scheduler_config.json`), as in any diffusers SDXL folder;
2. for a file with SDXL base's dimensions, SDXL base's own configs (engine.model.sdxl_configs,
   written to a temporary folder because diffusers' loader takes a folder);
3. tokenizers: engine.model.tokenizer_source (tokenizer_cache_dir in diffusers' or sd-scripts'
   layout, else SDXL's CLIP BPE vocabulary shipped with sdxl-tui). No network is used.
The UNet and the text encoders go through our own key conversion (engine.model.single_file,
checked against diffusers' converters in tests/engine/demo/test_tiny_model.py): each is built on
`meta` and its tensors are read one at a time without a memory map, cast straight to the
training dtype and assigned, so no part ever exists twice (issue 17: diffusers'
`from_single_file` kept the file's fp16 pages mapped while it built the fp32 UNet, +4.8 GiB at the
full UNet's load peak). Loading is strict, so a missing tensor is an error. A UNet whose keys the
conversion does not know falls back to diffusers' `from_single_file`; the VAE always goes there.
"""
from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path
from typing import Iterator, Optional

from engine.errors import ModelError
from engine.model.parts import LoadProgress, load_parts
from engine.model.prediction import declared_in_keys, with_declared
from engine.model.sdxl_configs import (
    SCHEDULER_CONFIG,
    SDXL_TEXT_ENCODER_2_CONFIG,
    SDXL_TEXT_ENCODER_CONFIG,
    SDXL_UNET_CONFIG,
    SDXL_VAE_CONFIG,
)
from engine.model.single_file import (
    TE1_PREFIX,
    TE2_PREFIX,
    UNET_PREFIX,
    clip_g_from_openclip,
    clip_l_from_original,
    unet_from_original,
)
from engine.model.source import (
    ModelShape,
    ModelSource,
    describe_single_file,
    read_header_shapes,
)

SDXL_BASE_CONFIGS = {
    "unet/config.json": {"_class_name": "UNet2DConditionModel", **SDXL_UNET_CONFIG},
    "vae/config.json": {"_class_name": "AutoencoderKL", **SDXL_VAE_CONFIG},
    "text_encoder/config.json": {"model_type": "clip_text_model", **SDXL_TEXT_ENCODER_CONFIG},
    "text_encoder_2/config.json": {"model_type": "clip_text_model", **SDXL_TEXT_ENCODER_2_CONFIG},
    "scheduler/scheduler_config.json": SCHEDULER_CONFIG,
}


def write_sdxl_base_configs(folder: Path) -> Path:
    """Write SDXL base's diffusers component configs (model_index, unet, vae, schedulers, text encoders) into
    `folder`, so a single file loads without the Hub; returns `folder`."""
    for relative, config in SDXL_BASE_CONFIGS.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2))
    return folder


def _has_configs(folder: Optional[Path]) -> bool:
    return bool(folder) and all((folder / name).is_file() for name in
                                ("unet/config.json", "text_encoder/config.json", "text_encoder_2/config.json"))


@contextlib.contextmanager
def config_folder(shape: ModelShape, tokenizer_cache_dir: str, path: Path) -> Iterator[Path]:
    """The folder whose configs describe this file's models."""
    local = Path(tokenizer_cache_dir).expanduser() if tokenizer_cache_dir else None
    if local and _has_configs(local):
        yield local
    elif shape.is_sdxl_base_size:
        with tempfile.TemporaryDirectory(prefix="sdxl-tui-config-") as tmp:
            yield write_sdxl_base_configs(Path(tmp))
    else:
        raise ModelError(
            f"{path.name} is {shape.description}, not SDXL base's size, so its configs cannot be assumed",
            hint="set tokenizer_cache_dir to a diffusers folder of this model (unet/, vae/, text_encoder/, "
                 "text_encoder_2/ configs and tokenizer/, tokenizer_2/)")


def _from_single_file(cls, path: Path, config: Path, subfolder: str, dtype=None):
    import torch

    try:
        return cls.from_single_file(str(path), config=str(config), subfolder=subfolder,
                                    local_files_only=True, torch_dtype=dtype or torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"could not load the {subfolder} from {path}: {exc}",
                         hint="the file may be damaged or not an SDXL checkpoint") from exc


def _read_prefixed(path: Path, prefix: str, dtype=None) -> dict:
    from engine.model.safetensors_read import read_prefixed

    try:  # dtype None: as stored
        return read_prefixed(path, prefix, dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"could not read {prefix}* from {path}: {exc}",
                         hint="the file may be damaged or not an SDXL checkpoint") from exc


def _unet(path: Path, config_dir: Path, dtype):
    """The UNet, its tensors read one at a time and cast to `dtype` (float32 when None) as they are
    read; diffusers' `from_single_file` when a key has no diffusers counterpart."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    dtype = dtype or torch.float32
    config = UNet2DConditionModel.load_config(str(config_dir), subfolder="unet", local_files_only=True)
    with init_empty_weights():
        model = UNet2DConditionModel.from_config(config)
    keys = list(model.state_dict())
    stored = _read_prefixed(path, UNET_PREFIX, dtype)
    try:
        state_dict = unet_from_original(stored, dict(model.config), keys)
    except KeyError:  # a layout our conversion does not know: diffusers' converter knows more
        del stored
        return _from_single_file(UNet2DConditionModel, path, config_dir, "unet", dtype)
    del stored
    return _assigned(model, state_dict, "the UNet", path)


def _assigned(model, state_dict: dict, what: str, path: Path):
    """`model` (built on meta) with `state_dict`'s tensors as its own, strictly (a missing or extra
    tensor is a ModelError naming `what`), in eval mode."""
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"{path.name}: {what} weights do not match its config ({str(exc)[:300]})",
                         hint="use the configs of this model (tokenizer_cache_dir)") from exc
    return model.eval()


def _text_encoder(cls, config_dir: Path, subfolder: str, state_dict: dict, path: Path, dtype=None):
    from accelerate import init_empty_weights
    from transformers import CLIPTextConfig

    config = CLIPTextConfig.from_pretrained(str(config_dir), subfolder=subfolder, local_files_only=True)
    with init_empty_weights():  # parameters on meta, buffers real; load_state_dict assigns them
        model = cls(config)
    import torch

    dtype = dtype or torch.float32
    # any tensor not yet in `dtype` is cast one at a time, freed as its copy is made, so the part
    # never exists twice (issue 17: +4.5 GiB for text encoder 2 when cast all at once).
    for key in list(state_dict):
        value = state_dict.pop(key)
        state_dict[key] = value.to(dtype) if value.is_floating_point() else value
    value = None  # `state_dict` (the caller's, consumed) now holds the only copy
    if not hasattr(model, "text_model"):  # transformers >= 5.6 flattened CLIPTextModel
        state_dict = {k.removeprefix("text_model."): v for k, v in state_dict.items()}
    return _assigned(model, state_dict, subfolder, path)


def _tokenizer_source(tokenizer_cache_dir: str, shapes: dict, path: Path):
    from engine.model.tokenizer_source import find_tokenizers, vocab_sizes

    return find_tokenizers(tokenizer_cache_dir, vocab_sizes(shapes), path.name)


def _scheduler_config(config_dir: Path) -> dict:
    path = config_dir / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()) if path.is_file() else dict(SCHEDULER_CONFIG)


def load_single_file_parts(path: Path, tokenizer_cache_dir: str = "", with_vae: bool = True,
                           progress: Optional[LoadProgress] = None, dtype=None, with_unet: bool = True) -> dict:
    """Every part of an original-layout SDXL file on the CPU: the UNet and text encoders in `dtype`
    (a torch dtype; float32 when None), the VAE in float32; raises ModelError."""
    if progress is not None:  # importing diffusers alone takes tens of seconds on a busy machine
        progress(0, 6, "libraries (diffusers, transformers)")
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    shapes = read_header_shapes(path)
    shape = describe_single_file(shapes)
    if with_vae and not shape.has_vae:
        raise ModelError(f"{path.name} has no VAE inside (no first_stage_model.* tensors)",
                         hint="set the vae option to an SDXL VAE (folder, Hub id or .safetensors)")
    from engine.model.tokenizer_source import load_tokenizers

    tokenizers = _tokenizer_source(tokenizer_cache_dir, shapes, path)  # before anything loads: cheap
    te_dtype = dtype or torch.float32  # cast as read (safetensors_read.read_prefixed: no buffer per tensor)
    with config_folder(shape, tokenizer_cache_dir, path) as config_dir:
        parts = load_parts([
            ("tokenizers", "tokenizers", lambda: load_tokenizers(tokenizers)),
            ("unet", "UNet", lambda: _unet(path, config_dir, dtype) if with_unet else None),
            ("vae", "VAE", lambda: _from_single_file(AutoencoderKL, path, config_dir, "vae") if with_vae else None),
            ("text_encoder1", "text encoder 1", lambda: _text_encoder(
                CLIPTextModel, config_dir, "text_encoder",
                clip_l_from_original(_read_prefixed(path, TE1_PREFIX, te_dtype)), path, dtype)),
            ("text_encoder2", "text encoder 2", lambda: _text_encoder(
                CLIPTextModelWithProjection, config_dir, "text_encoder_2",
                clip_g_from_openclip(_read_prefixed(path, TE2_PREFIX, te_dtype)), path, dtype)),
            ("scheduler_config", "scheduler",
             lambda: with_declared(_scheduler_config(config_dir), declared_in_keys(shapes))),
        ], progress)
    parts["tokenizer1"], parts["tokenizer2"] = parts.pop("tokenizers")
    return parts


def load_single_file_unet(path: Path, tokenizer_cache_dir: str = "", dtype=None):
    """The UNet alone of an original-layout SDXL file, in `dtype` (float32 when None); raises ModelError."""
    shape = describe_single_file(read_header_shapes(path))
    with config_folder(shape, tokenizer_cache_dir, path) as config_dir:
        return _unet(path, config_dir, dtype)


def _vae_config_dir(base: Optional[ModelSource], tokenizer_cache_dir: str) -> Optional[Path]:
    for candidate in (Path(base.path) if base and base.kind == "diffusers" else None,
                      Path(tokenizer_cache_dir).expanduser() if tokenizer_cache_dir else None):
        if candidate and (candidate / "vae" / "config.json").is_file():
            return candidate
    return None


def load_single_file_vae(path: Path, base: Optional[ModelSource], tokenizer_cache_dir: str = ""):
    """A VAE saved alone: original names (with or without `first_stage_model.`) or diffusers names."""
    from diffusers import AutoencoderKL

    keys = read_header_shapes(path)
    if not any(k.startswith(("encoder.", "decoder.", "first_stage_model.", "vae.")) for k in keys):
        raise ModelError(f"{path.name} does not look like a VAE (no encoder./decoder. tensors)",
                         hint="choose an SDXL VAE .safetensors, or leave vae empty to keep the model's own")
    with contextlib.ExitStack() as stack:
        config_dir = _vae_config_dir(base, tokenizer_cache_dir)
        if config_dir is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sdxl-tui-config-"))
            config_dir = write_sdxl_base_configs(Path(tmp))
        if any(k.startswith("encoder.down_blocks.") for k in keys):  # diffusers names: load directly
            import torch
            from safetensors.torch import load_file

            config = AutoencoderKL.load_config(str(config_dir), subfolder="vae")
            vae = AutoencoderKL.from_config(config)
            state = {k: v.float() for k, v in load_file(str(path)).items()}
            try:
                vae.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                raise ModelError(f"{path.name} does not fit an SDXL VAE: {str(exc)[:300]}") from exc
            return vae.to(torch.float32).eval()
        return _from_single_file(AutoencoderKL, path, config_dir, "vae")
