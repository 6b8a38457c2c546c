"""v-prediction SDXL: the `v_pred` / `ztsnr` markers of a single file and the options."""
from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file

from engine.config.schema import ModelSection
from engine.model.load import load_sdxl, make_noise_scheduler
from engine.model.prediction import declared_in_keys, training_scheduler_config

BASE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon"}


def test_markers_are_read_from_tensor_names():
    assert declared_in_keys(["a", "v_pred"]).v_prediction and not declared_in_keys(["a", "v_pred"]).zero_terminal_snr
    assert declared_in_keys(["ztsnr"]).zero_terminal_snr and not declared_in_keys(["x"]).v_prediction


def test_options_turn_on_v_prediction_and_zero_terminal_snr():
    assert training_scheduler_config(BASE, v_parameterization=False, zero_terminal_snr=False) == BASE
    config = training_scheduler_config(BASE, v_parameterization=True, zero_terminal_snr=True)
    scheduler = make_noise_scheduler(config)
    assert scheduler.config.prediction_type == "v_prediction"
    # zero terminal SNR (arXiv 2305.08891): alpha_bar_T = 0, alpha_bar_0 unchanged
    plain = make_noise_scheduler(BASE)
    assert float(scheduler.alphas_cumprod[-1]) == 0.0
    assert torch.allclose(scheduler.alphas_cumprod[0], plain.alphas_cumprod[0])
    sqrt_bar = plain.alphas_cumprod.sqrt()
    expected = ((sqrt_bar - sqrt_bar[-1]) * sqrt_bar[0] / (sqrt_bar[0] - sqrt_bar[-1])) ** 2
    assert torch.allclose(scheduler.alphas_cumprod, expected, atol=1e-6)


def test_single_file_with_v_pred_key_loads_as_v_prediction(tiny_model, tmp_path):
    marked = tmp_path / "vpred.safetensors"
    tensors = load_file(tiny_model.single_file)
    tensors["v_pred"] = torch.tensor([])
    tensors["ztsnr"] = torch.tensor([])
    save_file(tensors, str(marked))
    model = load_sdxl(ModelSection(pretrained_model_name_or_path=str(marked),
                                   tokenizer_cache_dir=str(tiny_model.diffusers_dir)))
    assert model.noise_scheduler.config.prediction_type == "v_prediction"
    assert float(model.noise_scheduler.alphas_cumprod[-1]) == 0.0


def test_a_marked_single_file_is_announced_before_loading(tiny_model, tmp_path):
    from engine.model.prediction import prediction_notes

    marked = tmp_path / "vpred.safetensors"
    tensors = load_file(tiny_model.single_file)
    tensors["v_pred"] = torch.tensor([])
    save_file(tensors, str(marked))
    notes = prediction_notes(ModelSection(pretrained_model_name_or_path=str(marked)))
    assert len(notes) == 1 and "trained as v-prediction" in notes[0]
    assert prediction_notes(ModelSection(pretrained_model_name_or_path=str(marked), v_parameterization=True)) == []
    assert prediction_notes(ModelSection(pretrained_model_name_or_path=str(tiny_model.single_file))) == []
