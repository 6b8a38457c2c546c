"""`sdxl-tui inspect`: layouts recognised, counts, rank/alpha, dtype, NaN/Inf, zero-up warning,
metadata, per-target verdicts, and a non-zero exit on a broken file."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from engine.config.schema import RunConfig
from engine.lora.file import TrainingInfo, build_metadata, load_lora, save_lora
from engine.lora.inspection import inspect_lora
from engine.lora.network import create_network
from sdxl_tui.cli import main


@pytest.fixture(scope="module")
def network():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from engine.demo.tiny_model import text_encoder_config, unet_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**unet_config())
    te1 = CLIPTextModel(text_encoder_config(32, 12, 4, "quick_gelu", 32, 100, 99))
    te2 = CLIPTextModelWithProjection(text_encoder_config(48, 10, 4, "gelu", 40, 100, 0))
    net = create_network(unet, te1, te2, dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)
    for module in net.lora_modules():
        nn.init.normal_(module.lora_up.weight, std=0.02)
    return net


def _metadata() -> dict[str, str]:
    cfg = RunConfig().with_values(network_dim=4, network_alpha=2.0, output_name="tiny")
    info = TrainingInfo(steps=10, epoch=1, started_at=1.7e9, finished_at=1.7e9 + 60, session_id=1,
                        dataset_manifest_hash="feed")
    return build_metadata(cfg, training_info=info)


@pytest.fixture()
def our_file(tmp_path, network):
    return save_lora(tmp_path / "ours.safetensors", network, _metadata(), "fp16")


def _rewrite(tmp_path, name, tensors, metadata=None):
    from safetensors.torch import save_file

    path = tmp_path / name
    save_file(tensors, str(path), metadata=metadata)
    return path


def test_our_file_loads_everywhere(our_file, network, capsys):
    report = inspect_lora(our_file)
    assert report.layout == "sd-scripts" and report.base_model == "SDXL" and not report.broken
    parts = {part: len(mods) for part, mods in network.modules_by_part().items()}
    assert report.counts_by_part() == parts
    summary = report.rank_alpha_summary()
    assert summary[("linear", 4, 2.0)] > 0 and summary[("conv3x3", 2, 1.0)] > 0
    assert ("conv1x1", 4, 2.0) in summary  # skip_connection takes network_dim
    assert dict(report.dtypes) == {"float16": 3 * sum(parts.values())}
    assert all(v.ok for v in report.verdicts) and report.warnings == []
    assert report.key_metadata()["ss_network_dim"] == "4"
    assert main(["inspect", str(our_file)]) == 0
    out = capsys.readouterr().out
    assert "lora_unet_" in out and "te2" in out and "ComfyUI" in out and "sdxl_tui.config" in out
    assert main(["inspect", "--json", str(our_file)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["broken"] is False and data["modules"] == parts and data["has_config"] is True


def test_untrained_file_warns_all_zero_up(tmp_path, network):
    fresh = {k: (torch.zeros_like(v) if k.endswith("lora_up.weight") else v)
             for k, v in network.kohya_state_dict().items()}
    path = save_lora(tmp_path / "fresh.safetensors", fresh, {}, "fp32")
    report = inspect_lora(path)
    assert not report.broken and any("every lora_up weight is zero" in w for w in report.warnings)


def test_nan_makes_the_file_broken(tmp_path, our_file, capsys):
    tensors, metadata = load_lora(our_file)
    key = next(k for k in tensors if k.endswith("lora_down.weight"))
    tensors[key] = tensors[key].clone()
    tensors[key][0, 0] = float("nan")
    path = _rewrite(tmp_path, "nan.safetensors", tensors, metadata)
    report = inspect_lora(path)
    assert report.broken and report.nonfinite == [key]
    assert all(not v.ok for v in report.verdicts)
    assert any("changed after training" in w for w in report.warnings)  # sshs_model_hash no longer matches
    assert main(["inspect", str(path)]) == 65
    assert "NaN" in capsys.readouterr().out


def test_truncated_and_incomplete_files_are_broken(tmp_path, our_file):
    data = our_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    assert inspect_lora(cut).broken
    assert main(["inspect", str(cut)]) == 65
    tensors, _ = load_lora(our_file)
    victim = next(k for k in tensors if k.endswith("lora_up.weight"))
    del tensors[victim]
    report = inspect_lora(_rewrite(tmp_path, "incomplete.safetensors", tensors))
    assert report.broken and "no lora_up" in report.errors[0]
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 65


def test_peft_layout_fails_a1111_and_sd_scripts_with_reasons(tmp_path):
    tensors = {
        "unet.down_blocks.1.attentions.0.proj_in.lora_A.weight": torch.randn(4, 64),
        "unet.down_blocks.1.attentions.0.proj_in.lora_B.weight": torch.randn(64, 4),
        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.randn(4, 48),
        "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": torch.randn(48, 4),
    }
    report = inspect_lora(_rewrite(tmp_path, "peft.safetensors", tensors))
    assert report.layout == "diffusers-peft" and report.base_model == "SDXL" and not report.broken
    assert report.counts_by_part() == {"unet": 1, "te2": 1}
    verdicts = {v.target: v for v in report.verdicts}
    assert verdicts["diffusers"].ok and verdicts["ComfyUI"].ok
    assert not verdicts["A1111/Forge"].ok and "lora key not loaded" in verdicts["A1111/Forge"].reason
    assert not verdicts["sd-scripts"].ok


def test_kohya_names_with_diffusers_blocks_fail_only_sd_scripts(tmp_path):
    name = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_9_attn1_to_q"
    tensors = {f"{name}.lora_down.weight": torch.randn(4, 64), f"{name}.lora_up.weight": torch.randn(64, 4),
               f"{name}.alpha": torch.tensor(4.0)}
    report = inspect_lora(_rewrite(tmp_path, "mixed.safetensors", tensors))
    assert report.layout == "sd-scripts (diffusers block names)" and report.base_model == "SDXL"
    assert [v.target for v in report.verdicts if not v.ok] == ["sd-scripts"]


def test_sd1_file_is_not_sdxl(tmp_path):
    name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    tensors = {f"{name}.lora_down.weight": torch.randn(4, 768), f"{name}.lora_up.weight": torch.randn(3072, 4),
               f"{name}.alpha": torch.tensor(4.0)}
    report = inspect_lora(_rewrite(tmp_path, "sd1.safetensors", tensors))
    assert report.base_model == "SD1.x-2.x" and not any(v.ok for v in report.verdicts)
    assert "not SDXL" in report.verdicts[0].reason
