"""What the args import does with sd-scripts options it does not take 1:1: sd-scripts' defaults
where ours differ, renamed values, options with no effect on the LoRA (each with the reason),
and options refused by name (each with the reason). Plain data; engine/interop/kohya_arg_keys.py
applies it key by key.
"""
from __future__ import annotations

from typing import Any

# sd-scripts' defaults where they differ from ours (applied when the args file leaves the key out).
SD_SCRIPTS_DEFAULTS: dict[str, Any] = {
    "network_dim": 4, "network_alpha": 1.0, "optimizer_type": "AdamW", "learning_rate": 2e-6,
    "mixed_precision": "no", "gradient_checkpointing": False, "cache_latents": False, "save_precision": "fp32",
    "output_name": "last", "sample_sampler": "ddim",
}
SD_SCRIPTS_MAX_TRAIN_STEPS = 1600  # when neither steps nor epochs are given

SAMPLERS = {"k_euler": "euler", "k_euler_a": "euler_a", "k_dpm_2_a": "dpm_2_a", "k_lms": "lms",
             "dpm_2": "k_dpm_2"}
SAVE_PRECISION = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}

# sd-scripts options with no effect on what is learned, or handled automatically here.
HARMLESS = {
    "xformers":
        "attention always runs through PyTorch's scaled_dot_product_attention (diffusers' AttnProcessor2_0), which "
        "picks a flash or memory-efficient kernel itself; the same maths as xformers",
    "sdpa": "PyTorch's scaled_dot_product_attention is always used (diffusers' AttnProcessor2_0)",
    "mem_eff_attn": "PyTorch's scaled_dot_product_attention is always used; it picks a memory-efficient kernel itself",
    "persistent_data_loader_workers":
        "only keeps DataLoader workers alive between epochs (start-up time); images come from per-sample seeded "
        "generators, so the batches are the same",
    "lowram": "only where weights sit while loading (sd-scripts loads to the GPU first); the trained LoRA is the same",
    "highvram": "only skips emptying the CUDA cache after caching latents (speed); the trained LoRA is the same",
    "disable_mmap_load_safetensors":
        "only how the model file is read (a WSL speed setting); the same tensors are loaded",
    "skip_cache_check":
        "caches are always checked here; a check can only catch a stale cache, never change a fresh one",
    "console_log_level": "not used", "console_log_file": "not used", "console_log_simple": "not used",
    "output_config": "not used", "config_file": "not used",
    "ddp_timeout": "not used", "ddp_gradient_as_bucket_view": "not used", "ddp_static_graph": "not used",
    "use_safetensors": "always safetensors",
    "zero_stage": "only used with deepspeed (refused)",
    "offload_optimizer_device": "only used with deepspeed (refused)",
    "offload_optimizer_nvme_path": "only used with deepspeed (refused)",
    "offload_param_device": "only used with deepspeed (refused)",
    "offload_param_nvme_path": "only used with deepspeed (refused)",
    "zero3_init_flag": "only used with deepspeed (refused)",
    "zero3_save_16bit_model": "only used with deepspeed (refused)",
    "fp16_master_weights_and_gradients": "only used with deepspeed (refused)",
}
# sd-scripts options refused by name when set (ConfigError before anything loads): option -> (off values, why).
REFUSED = {
    "wandb_api_key": ((None, ""),
        "a key in a config file would be copied into config.toml and the LoRA's metadata; set the environment variable"
        " WANDB_API_KEY (wandb reads it) or run `wandb login`"),
    "deepspeed": ((None, False),
        "DeepSpeed is not used: a LoRA's trainable weights and optimizer state are a few MB, so ZeRO's sharding saves "
        "almost nothing while its engine takes over precision and gradients; plain DDP (several processes via "
        "`accelerate launch` or torchrun) is the faster choice for LoRA"),
    "huggingface_repo_id": ((None, ""),
        "uploading to the Hugging Face Hub is not done by sdxl-tui (it cannot be tested offline here); upload the "
        "finished LoRA with `huggingface-cli upload REPO OUTPUT_DIR`"),
    "huggingface_repo_type": ((None, ""),
        "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "huggingface_path_in_repo": ((None, ""),
        "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "huggingface_token": ((None, ""),
        "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "huggingface_repo_visibility": ((None, ""),
        "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "save_state_to_huggingface": ((None, False),
        "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "resume_from_huggingface": ((None, False),
        "resuming from the Hub is not done by sdxl-tui; download the state and use `sdxl-tui resume`"),
    "async_upload": ((None, False), "Hub upload is not done by sdxl-tui; use `huggingface-cli upload` after training"),
    "cpu_offload_checkpointing": ((None, False),
        "offloading checkpointed activations to the CPU is not implemented (diffusers' SDXL UNet has no such switch)"),
}
# sd-scripts options that change training and have no equivalent here: reported when not "off"
# (every one of them is implemented or refused by name today).
UNSUPPORTED_OFF: dict[str, tuple] = {}

# Options sdxl-tui takes under their names but refuses (engine/config/rules.py) when set to these.
REFUSED_UNLESS = {
    "masked_loss": (False, None),
    "max_token_length": (None, 75, 150, 225),
    "alpha_mask": (False, None),
    "conditioning_data_dir": (None, ""),
    "network_multiplier": (None, 1.0),
}
