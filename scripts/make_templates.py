"""Regenerate sdxl_tui/templates/*.toml from the presets below (run after adding config fields).

The presets are the judgement; the comments come from the config's own help texts, so the
templates never drift from what the engine accepts.
"""
from __future__ import annotations

from pathlib import Path

from engine.config.schema import RunConfig
from engine.config.toml_file import dumps_config

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"

PRESETS: dict[str, tuple[str, dict]] = {
    "12gb": ("12 GB cards (RTX 3060 12 GB, 4070): UNet-only LoRA, everything cached, rank 8.", {
        "pretrained_model_name_or_path": SDXL_BASE, "dataset_config": "dataset.toml",
        "network_dim": 8, "network_alpha": 4, "network_train_unet_only": True,
        "optimizer_type": "AdamW8bit", "learning_rate": 1e-4, "max_train_epochs": 10,
        "mixed_precision": "bf16", "gradient_checkpointing": True,
        "cache_latents": True, "cache_latents_to_disk": True,
        "cache_text_encoder_outputs": True, "cache_text_encoder_outputs_to_disk": True,
        "save_every_n_epochs": 1, "save_last_n_epochs": 3, "output_name": "my_sdxl_lora",
    }),
    "16gb": ("16 GB cards (RTX 4060 Ti 16 GB, 4080): UNet-only LoRA, cached, rank 16.", {
        "pretrained_model_name_or_path": SDXL_BASE, "dataset_config": "dataset.toml",
        "network_dim": 16, "network_alpha": 8, "network_train_unet_only": True,
        "optimizer_type": "AdamW8bit", "learning_rate": 1e-4, "max_train_epochs": 10,
        "mixed_precision": "bf16", "gradient_checkpointing": True,
        "cache_latents": True, "cache_latents_to_disk": True,
        "cache_text_encoder_outputs": True, "cache_text_encoder_outputs_to_disk": True,
        "save_every_n_epochs": 1, "save_last_n_epochs": 3, "output_name": "my_sdxl_lora",
    }),
    "24gb": ("24 GB cards (RTX 3090 / 4090): UNet + both text encoders, rank 32, the guide's example.", {
        "pretrained_model_name_or_path": SDXL_BASE, "dataset_config": "dataset.toml",
        "network_dim": 32, "network_alpha": 16,
        "optimizer_type": "AdamW8bit", "learning_rate": 1e-4, "unet_lr": 1e-4,
        "text_encoder_lr1": 1e-5, "text_encoder_lr2": 1e-5, "max_train_epochs": 10,
        "mixed_precision": "bf16", "gradient_checkpointing": True,
        "cache_latents": True, "cache_latents_to_disk": True,
        "save_every_n_epochs": 1, "save_last_n_epochs": 3, "save_state": True, "output_name": "my_sdxl_lora",
    }),
    "80gb": ("80 GB cards (A100 / H100): rank 64, no checkpointing, fp32 AdamW state, bigger batches.", {
        "pretrained_model_name_or_path": SDXL_BASE, "dataset_config": "dataset.toml",
        "network_dim": 64, "network_alpha": 32, "train_batch_size": 8,
        "optimizer_type": "AdamW", "learning_rate": 2e-4, "unet_lr": 2e-4,
        "text_encoder_lr1": 2e-5, "text_encoder_lr2": 2e-5, "max_train_epochs": 10,
        "lr_scheduler": "cosine", "lr_warmup_steps": 0.05,
        "mixed_precision": "bf16", "gradient_checkpointing": False,
        "cache_latents": True, "cache_latents_to_disk": True,
        "save_every_n_epochs": 1, "save_last_n_epochs": 3, "save_state": True, "output_name": "my_sdxl_lora",
    }),
    "cpu-demo": ("The CPU demo: the built-in tiny SDXL and demo dataset (`sdxl-tui demo` fills the paths).", {
        "pretrained_model_name_or_path": "tiny-sdxl", "dataset_config": "dataset/dataset.toml",
        # A high UNet rate and conv LoRA so the loss visibly falls within a minute on a CPU.
        "network_dim": 8, "network_alpha": 8, "network_args": ["conv_dim=8", "conv_alpha=8"],
        "optimizer_type": "AdamW", "learning_rate": 2e-3,
        "unet_lr": 1e-2, "text_encoder_lr1": 5e-4, "text_encoder_lr2": 5e-4,
        "max_train_steps": 60, "lr_scheduler": "constant",
        "mixed_precision": "no", "gradient_checkpointing": False, "cache_latents": True,
        "save_every_n_steps": 30, "save_precision": "fp32", "save_state": True,
        "sample_prompts": "dataset/sample_prompts.txt", "sample_every_n_steps": 30,
        "output_dir": "output", "output_name": "demo_lora", "log_every_n_steps": 5, "seed": 1234,
    }),
}


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "sdxl_tui" / "templates"
    out.mkdir(exist_ok=True)
    for name, (title, values) in PRESETS.items():
        cfg = RunConfig().with_values(**values)
        header = (f"# Template: {title}\n# Relative paths are relative to this file's folder. "
                  f"Copy it next to your dataset.toml, then edit.\n")
        (out / f"{name}.toml").write_text(header + dumps_config(cfg), encoding="utf-8")
        print("wrote", out / f"{name}.toml")


if __name__ == "__main__":
    main()
