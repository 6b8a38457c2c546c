"""What the UNet is trained to predict: epsilon or v-prediction, and the noise schedule.

A single-file SDXL checkpoint may declare v-prediction with an empty marker tensor named
`v_pred` (and zero terminal SNR with `ztsnr`), as ComfyUI's `model_detection` and the
NoobAI-XL / v-pred SDXL releases do. Such a model is trained as v-prediction: the declared
markers, the model's scheduler config and the `v_parameterization` / `zero_terminal_snr`
options are combined into the one scheduler config the training noise is built from.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

V_PRED_KEY = "v_pred"
ZTSNR_KEY = "ztsnr"


@dataclass(frozen=True)
class DeclaredPrediction:
    """What a model file declares about its prediction: v-prediction, and zero terminal SNR."""
    v_prediction: bool = False
    zero_terminal_snr: bool = False


def declared_in_keys(keys: Iterable[str]) -> DeclaredPrediction:
    """The markers a single-file checkpoint's tensor names carry."""
    names = set(keys)
    return DeclaredPrediction(v_prediction=V_PRED_KEY in names, zero_terminal_snr=ZTSNR_KEY in names)


def with_declared(config: dict, declared: DeclaredPrediction) -> dict:
    """A copy of a scheduler config with a checkpoint's markers applied."""
    out = dict(config)
    if declared.v_prediction:
        out["prediction_type"] = "v_prediction"
    if declared.zero_terminal_snr:
        out["rescale_betas_zero_snr"] = True
    return out


def training_scheduler_config(config: dict, *, v_parameterization: bool, zero_terminal_snr: bool) -> dict:
    """The scheduler config the training noise uses: `v_parameterization` sets the v-prediction
    target (sd-scripts: `target = get_velocity(...)` when set); `zero_terminal_snr` rescales the
    betas so alpha_bar at the last timestep is 0 (arXiv 2305.08891; sd-scripts
    `fix_noise_scheduler_betas_for_zero_terminal_snr`, the same formula as diffusers'
    `rescale_betas_zero_snr`). Options only turn these on; a model that declares them keeps them."""
    out = dict(config)
    if v_parameterization:
        out["prediction_type"] = "v_prediction"
    if zero_terminal_snr:
        out["rescale_betas_zero_snr"] = True
    return out


def prediction_notes(model) -> list[str]:
    """What the run will train as, when a single-file checkpoint decides it (read from the
    header only, before any model loads). `model` is an engine.config.schema.ModelSection."""
    from pathlib import Path

    from engine.model.source import detect_model_source, read_header_shapes

    source = detect_model_source(model.pretrained_model_name_or_path)
    if source.kind != "single_file":
        return []
    declared = declared_in_keys(read_header_shapes(Path(source.path)))
    notes = []
    if declared.v_prediction and not model.v_parameterization:
        notes.append(f"{Path(source.path).name} declares v-prediction (a '{V_PRED_KEY}' key): it is trained as "
                     "v-prediction (as if v_parameterization = true)")
    if declared.zero_terminal_snr and not model.zero_terminal_snr:
        notes.append(f"{Path(source.path).name} declares zero terminal SNR (a '{ZTSNR_KEY}' key): its noise "
                     "schedule is rescaled (as if zero_terminal_snr = true)")
    return notes
