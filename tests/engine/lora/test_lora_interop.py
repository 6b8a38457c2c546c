"""Our LoRA file in diffusers: `load_lora_weights` takes every key without a warning, and after
`fuse_lora()` every targeted weight equals W + alpha/dim · up @ down on the very layer the
name points to (and nothing else moved). diffusers' kohya converter is an implementation
independent of ours, so agreement here means the names map to the right layers."""
from __future__ import annotations

import logging
import warnings

import pytest
import torch
from torch import nn

from engine.lora.file import load_lora, save_lora
from engine.lora.network import create_network


def _pipeline(tiny_model):
    from diffusers import StableDiffusionXLPipeline

    return StableDiffusionXLPipeline.from_pretrained(str(tiny_model.diffusers_dir), torch_dtype=torch.float32)


def _components(pipe):
    return {"unet": pipe.unet, "te1": pipe.text_encoder, "te2": pipe.text_encoder_2}


def _weights(pipe) -> dict[str, dict[str, torch.Tensor]]:
    """Every weight of the three models, under its plain name (PEFT's `.base_layer` removed)."""
    out = {}
    for part, model in _components(pipe).items():
        out[part] = {name.replace(".base_layer", ""): value.detach().clone()
                     for name, value in model.state_dict().items() if ".lora_" not in name}
    return out


def _expected_deltas(pipe, network) -> dict[str, dict[str, torch.Tensor]]:
    """weight name -> alpha/dim · up @ down, for the module each LoRA name was built on."""
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for part, model in _components(pipe).items():
        where = {id(module): name for name, module in model.named_modules()}
        deltas[part] = {}
        for module in network.modules_by_part()[part].values():
            up, down = module.lora_up.weight.float(), module.lora_down.weight.float()
            scale = float(module.alpha) / down.shape[0]
            if down.dim() == 2:
                delta = up @ down
            else:  # conv: up is 1x1
                delta = torch.einsum("or,rikl->oikl", up.flatten(1), down)
            deltas[part][where[id(module.org_module)] + ".weight"] = scale * delta
    return deltas


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[logging.LogRecord]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record,))


def _load_recording(pipe, path) -> dict:
    """load_lora_weights with every warning recorded: diffusers' logger does not propagate to
    the root logger, so a handler goes on each library's logger directly."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("diffusers", "peft", "transformers")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe.load_lora_weights(str(path))  # default adapter name, as users call it
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    return {"logs": handler.records, "warnings": caught}


def _load_and_fuse(tmp_path, tiny_model, caplog, **network_kwargs):
    pipe = _pipeline(tiny_model)
    before = _weights(pipe)
    network = create_network(pipe.unet, pipe.text_encoder, pipe.text_encoder_2, **network_kwargs)
    torch.manual_seed(3)
    for module in network.lora_modules():  # non-zero up so fusing changes something
        nn.init.normal_(module.lora_up.weight, std=0.02)
    path = save_lora(tmp_path / "lora.safetensors", network, {"ss_network_dim": str(network_kwargs["dim"])}, "fp32")
    deltas = _expected_deltas(pipe, network)
    tensors, _ = load_lora(path)
    del network  # never applied: the pipeline's models are untouched

    records = _load_recording(pipe, path)
    problems = [r.getMessage() for r, in records["logs"]]
    problems += [str(w.message) for w in records["warnings"] if "lora" in str(w.message).lower()
                 or "key" in str(w.message).lower() or "adapter" in str(w.message).lower()]
    assert problems == [], problems

    injected = {part: sum(1 for _, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A))
                for part, model in _components(pipe).items()}
    peft_file = _save_as_diffusers(pipe, tmp_path / "peft")
    pipe.fuse_lora(lora_scale=1.0)
    return before, _weights(pipe), deltas, injected, tensors, peft_file


def _save_as_diffusers(pipe, folder):
    """The same LoRA re-saved by diffusers in its own (PEFT) layout, for `inspect` to read."""
    from peft.utils import get_peft_model_state_dict

    def layers(model):
        return get_peft_model_state_dict(model, adapter_name=next(iter(model.peft_config)))

    type(pipe).save_lora_weights(str(folder), unet_lora_layers=layers(pipe.unet),
                                 text_encoder_lora_layers=layers(pipe.text_encoder),
                                 text_encoder_2_lora_layers=layers(pipe.text_encoder_2))
    return folder / "pytorch_lora_weights.safetensors"


@pytest.mark.slow
@pytest.mark.parametrize("network_kwargs", [
    {"dim": 4, "alpha": 2.0},
    {"dim": 4, "alpha": 8.0, "conv_dim": 2, "conv_alpha": 1.0},
], ids=["linear", "conv"])
def test_diffusers_loads_every_key_and_fuses_onto_the_named_layers(tmp_path, tiny_model, caplog, network_kwargs):
    before, after, deltas, injected, tensors, peft_file = _load_and_fuse(tmp_path, tiny_model, caplog, **network_kwargs)
    expected_counts = {part: len(d) for part, d in deltas.items()}
    assert injected == expected_counts, "diffusers injected a different number of adapters than the file holds"
    assert sum(expected_counts.values()) * 3 == len(tensors)
    moved = 0
    for part in before:
        for name, weight in before[part].items():
            if name in deltas[part]:
                torch.testing.assert_close(after[part][name], weight + deltas[part][name], atol=1e-5, rtol=1e-4,
                                           msg=lambda m, n=name: f"{part} {n}: {m}")
                moved += 1
            else:
                torch.testing.assert_close(after[part][name], weight, msg=lambda m, n=name: f"{part} {n} moved: {m}")
    assert moved == sum(expected_counts.values())
    if "conv_dim" in network_kwargs:
        assert any(d.dim() == 4 and d.shape[-1] == 3 for d in deltas["unet"].values())
    # inspect reads diffusers' own layout of the same adapters and says where it will load.
    from engine.lora.inspection import inspect_lora

    report = inspect_lora(peft_file)
    assert report.layout == "diffusers-peft" and not report.broken
    assert report.counts_by_part() == expected_counts
    assert {v.target: v.ok for v in report.verdicts} == {"ComfyUI": True, "A1111/Forge": False,
                                                         "diffusers": True, "sd-scripts": False}


def test_names_point_at_the_layers_sd_scripts_means(tiny_model):
    """Spot checks of the original-layout names against diffusers paths, written out by hand."""
    pipe_unet_dir = tiny_model.diffusers_dir / "unet"
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(pipe_unet_dir))
    network = create_network(unet, None, None, dim=2, alpha=1, conv_dim=2)
    where = {id(m): n for n, m in unet.named_modules()}
    paths = {name: where[id(module.org_module)] for name, module in network.modules_by_part()["unet"].items()}
    assert paths["lora_unet_input_blocks_4_1_proj_in"] == "down_blocks.1.attentions.0.proj_in"
    assert paths["lora_unet_input_blocks_8_1_transformer_blocks_1_attn2_to_k"] == \
        "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k"
    assert paths["lora_unet_middle_block_1_transformer_blocks_0_ff_net_0_proj"] == \
        "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj"
    assert paths["lora_unet_output_blocks_2_1_proj_out"] == "up_blocks.0.attentions.2.proj_out"
    assert paths["lora_unet_output_blocks_2_2_conv"] == "up_blocks.0.upsamplers.0.conv"
    assert paths["lora_unet_input_blocks_3_0_op"] == "down_blocks.0.downsamplers.0.conv"
    assert paths["lora_unet_output_blocks_8_0_skip_connection"] == "up_blocks.2.resnets.2.conv_shortcut"
    assert paths["lora_unet_middle_block_2_emb_layers_1"] == "mid_block.resnets.1.time_emb_proj"


def test_every_name_is_a_layer_of_the_single_file_checkpoint(tiny_model):
    """ComfyUI and A1111 build their LoRA key maps from the checkpoint itself: `lora_unet_` +
    the `model.diffusion_model.` key without `.weight`, dots -> underscores (and the same for
    text encoder 1 under `conditioner.embedders.0.transformer.`). Every name we write must be
    one of those layers, with the matching weight shape."""
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open
    from transformers import CLIPTextModel

    with safe_open(str(tiny_model.single_file), framework="pt") as handle:
        shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    checkpoint = {}
    for key, shape in shapes.items():
        for prefix, lora_prefix in (("model.diffusion_model.", "lora_unet_"),
                                    ("conditioner.embedders.0.transformer.", "lora_te1_")):
            if key.startswith(prefix) and key.endswith(".weight"):
                checkpoint[lora_prefix + key[len(prefix):-len(".weight")].replace(".", "_")] = shape

    unet = UNet2DConditionModel.from_pretrained(str(tiny_model.diffusers_dir / "unet"))
    te1 = CLIPTextModel.from_pretrained(str(tiny_model.diffusers_dir / "text_encoder"))
    network = create_network(unet, te1, None, dim=2, alpha=1, conv_dim=2, conv_alpha=1)
    for part in ("unet", "te1"):
        modules = network.modules_by_part()[part]
        assert modules
        for name, module in modules.items():
            assert name in checkpoint, f"{name} is not a layer of the single-file checkpoint"
            assert checkpoint[name] == tuple(module.org_module.weight.shape), name
