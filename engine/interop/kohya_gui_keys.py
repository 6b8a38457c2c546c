"""The kohya_ss GUI's keys by what kohya_ss' `lora_gui.py: train_model` does with them (tables only).

Read with kohya_gui.py, which applies them.
"""
from __future__ import annotations

from typing import Any, Callable, Optional


def gui_int(value: Any) -> int:
    """A GUI JSON number as int (the GUI writes "" or None for unset, and numbers as strings or floats): 0 for unset."""
    return int(float(value)) if value not in ("", None) else 0


def gui_float(value: Any) -> float:
    """A GUI JSON number as float: 0.0 for "" or None."""
    return float(value) if value not in ("", None) else 0.0


# GUI key == sd-scripts option; the cast kohya_ss applies (identity when None).
SAME_NAME: dict[str, Optional[Callable[[Any], Any]]] = {key: None for key in (
    "bucket_no_upscale", "bucket_reso_steps", "cache_latents", "cache_latents_to_disk", "caption_dropout_rate",
    "caption_extension", "color_aug", "dataset_config", "debiased_estimation_loss", "dim_from_weights",
    "enable_bucket", "flip_aug", "fp8_base", "full_bf16", "full_fp16", "gradient_checkpointing", "highvram",
    "ip_noise_gamma", "ip_noise_gamma_random_strength", "learning_rate", "logging_dir", "log_config",
    "log_tracker_name", "log_tracker_config", "loss_type", "huber_c", "huber_scale", "huber_schedule",
    "lr_scheduler", "lr_scheduler_power", "lr_scheduler_type", "masked_loss", "max_bucket_reso",
    "max_grad_norm", "max_timestep", "mem_eff_attn", "min_snr_gamma", "min_timestep", "mixed_precision",
    "network_alpha", "network_dim", "network_dropout", "network_weights", "output_dir", "output_name",
    "pretrained_model_name_or_path", "prior_loss_weight", "random_crop", "reg_data_dir", "resume",
    "sample_every_n_epochs", "sample_every_n_steps", "sample_sampler", "save_every_n_epochs", "save_every_n_steps",
    "save_last_n_steps", "save_last_n_steps_state", "save_last_n_epochs", "save_last_n_epochs_state",
    "save_model_as", "save_precision", "save_state", "save_state_on_train_end", "scale_v_pred_loss_like_noise_pred",
    "scale_weight_norms", "shuffle_caption", "skip_cache_check", "train_batch_size", "train_data_dir",
    "training_comment", "log_with", "v2", "v_parameterization", "v_pred_like_loss", "vae", "vae_batch_size",
    "wandb_api_key", "weighted_captions", "train_inpainting", "async_upload", "huggingface_repo_id",
    "huggingface_token", "huggingface_repo_type", "huggingface_repo_visibility", "huggingface_path_in_repo",
    "save_state_to_huggingface", "resume_from_huggingface", "metadata_author", "metadata_description",
    "metadata_license", "metadata_tags", "metadata_title", "in_json",
)}
SAME_NAME.update({
    "gradient_accumulation_steps": gui_int, "keep_tokens": gui_int, "caption_dropout_every_n_epochs": gui_int,
    "min_bucket_reso": gui_int, "max_token_length": gui_int, "persistent_data_loader_workers": lambda v: int(bool(v)),
    "max_train_epochs": gui_int, "clip_skip": gui_int, "seed": gui_int, "train_batch_size": gui_int,
})
# Only passed with noise_offset_type = Original (the first) or Multires (the second).
ORIGINAL_NOISE = ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
MULTIRES_NOISE = ("multires_noise_iterations", "multires_noise_discount")
# kohya_ss' accelerate launch settings (class_accelerate_launch.py).
LAUNCH_KEYS = ("num_processes", "num_machines", "multi_gpu", "gpu_ids", "main_process_port",
               "num_cpu_threads_per_process", "dynamo_backend", "dynamo_mode", "dynamo_use_fullgraph",
               "dynamo_use_dynamic", "extra_accelerate_launch_args")
# GUI keys that select the script/model family: sdxl-tui trains SDXL only.
FAMILY_FLAGS = ("flux1_checkbox", "sd3_checkbox", "hunyuan_image_checkbox", "anima_checkbox", "lumina_checkbox")
# GUI-only keys with no effect on the command line.
GUI_ONLY = {
    "model_list": "the GUI's model picker; the model is pretrained_model_name_or_path",
    "lowvram": "kohya_ss does not pass it (sd-scripts removed --lowvram)",
    "stop_text_encoder_training": "kohya_ss' LoRA tab does not pass it (it logs 'not yet supported. Ignoring')",
    "stop_text_encoder_training_pct": "the old name of stop_text_encoder_training, which kohya_ss' LoRA tab does "
                                      "not pass (it logs 'not yet supported. Ignoring')",
    "sdxl": "selects sdxl_train_network.py, the script sdxl-tui follows",
}
# Keys of the GUI's other model families: kohya_ss passes them only with that family's checkbox on
# (flux1_checkbox, sd3_checkbox, ...), which is refused above, so here they are true no-ops.
FAMILY_PREFIXES = ("flux1_", "sd3_", "hunyuan_", "anima_", "lumina_")
FAMILY_KEYS = frozenset((
    "fp8_base_unet", "train_lora_ggpo", "ggpo_sigma", "ggpo_beta", "model_type", "ae", "clip_l", "t5xxl",
    "discrete_flow_shift", "model_prediction_type", "timestep_sampling", "split_mode", "train_blocks",
    "t5xxl_max_token_length", "enable_all_linear", "guidance_scale", "mem_eff_save", "apply_t5_attn_mask",
    "split_qkv", "train_t5xxl", "cpu_offload_checkpointing", "blocks_to_swap", "single_blocks_to_swap",
    "double_blocks_to_swap", "show_timesteps", "show_timesteps_resolution", "img_attn_dim", "img_mlp_dim",
    "img_mod_dim", "single_dim", "txt_attn_dim", "txt_mlp_dim", "txt_mod_dim", "single_mod_dim", "in_dims",
    "train_double_block_indices", "train_single_block_indices", "clip_g", "clip_g_dropout_rate", "logit_mean",
    "logit_std", "mode_scale", "pos_emb_random_crop_rate", "save_clip", "save_t5xxl", "t5xxl_device",
    "t5xxl_dtype", "weighting_scheme",
))
HUBER_KEYS = ("huber_c", "huber_scale", "huber_schedule")
# Old keys the current GUI no longer reads: a no-op when empty/off, refused when set.
OLD_KEYS = {"conv_dims": "conv_block_dims", "conv_alphas": "conv_block_alphas", "no_token_padding": "",
             "lora_network_weights": "network_weights"}
