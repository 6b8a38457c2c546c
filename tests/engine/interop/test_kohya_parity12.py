"""import-kohya of an args TOML setting every option of issue 12: each is mapped (or refused by
name), none is left "not used"; values arrive under their own names."""
from __future__ import annotations

from engine.config.rules import ERROR, check_rules
from engine.interop.kohya_import import convert_kohya_args

ISSUE_12_ARGS = {
    "dataset_config": "d.toml", "pretrained_model_name_or_path": "m",
    "noise_offset": 0.05, "noise_offset_random_strength": True, "adaptive_noise_scale": 0.01,
    "multires_noise_iterations": 6, "multires_noise_discount": 0.4,
    "ip_noise_gamma": 0.1, "ip_noise_gamma_random_strength": True,
    "min_timestep": 100, "max_timestep": 900,
    "loss_type": "huber", "huber_c": 0.2, "huber_scale": 1.5, "huber_schedule": "exponential",
    "debiased_estimation_loss": True, "v_pred_like_loss": None, "scale_v_pred_loss_like_noise_pred": True,
    "v_parameterization": True, "zero_terminal_snr": True,
    "masked_loss": False, "weighted_captions": False, "max_token_length": 75,
    "caption_separator": ";", "enable_wildcard": True, "face_crop_aug_range": None,
    "resize_interpolation": "lanczos", "validation_split": 0.1, "validation_seed": 3, "alpha_mask": False,
    "lr_warmup_steps": 0, "lr_scheduler": "constant", "sample_every_n_epochs": 1,
    "sample_every_n_steps": 100, "sample_prompts": "p.txt",
}


def test_every_issue_12_option_is_mapped_and_none_is_not_used():
    result = convert_kohya_args(ISSUE_12_ARGS)
    notes = {n.key: n for n in result.notes}
    for key in ISSUE_12_ARGS:
        assert key in notes, key
        assert notes[key].status != "not used", str(notes[key])
    t = result.config.training
    assert (t.min_timestep, t.max_timestep, t.loss_type, t.huber_schedule, t.multires_noise_iterations) == \
        (100, 900, "huber", "exponential", 6)
    assert result.config.model.v_parameterization and result.config.model.zero_terminal_snr
    assert result.dataset_defaults["validation_split"] == 0.1 and result.dataset_defaults["enable_wildcard"]
    assert not [i for i in check_rules(result.config) if i.level == ERROR]


def test_options_sdxl_tui_cannot_honour_are_noted_as_refused_and_the_rules_stop_them():
    result = convert_kohya_args({"dataset_config": "d.toml", "pretrained_model_name_or_path": "m",
                                 "masked_loss": True, "weighted_captions": True, "max_token_length": 300,
                                 "face_crop_aug_range": "2.0,4.0"})
    notes = {n.key: n for n in result.notes}
    for key in ("masked_loss", "max_token_length", "face_crop_aug_range"):
        assert notes[key].status == "refused", str(notes[key])
    errors = {k for i in check_rules(result.config) if i.level == ERROR for k in i.keys}
    assert {"masked_loss", "weighted_captions", "max_token_length"} <= errors
