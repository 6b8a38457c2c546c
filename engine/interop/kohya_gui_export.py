"""RunConfig -> a kohya_ss GUI JSON ("Load config" in the LoRA tab), so a run can go back to the GUI.

The values are chosen so that kohya_ss' `train_model` passes sd-scripts the same options (see
kohya_gui.py for the forward mapping); `import-kohya` of the written file gives the same run config.
The dataset goes as `dataset_config` (a TOML beside the JSON, image paths absolute); the dataset
options the GUI would also pass (bucket steps and limits) are written as sd-scripts' own defaults, and
caption_extension / max_resolution / enable_bucket empty or off, so the dataset TOML alone decides.
Options the GUI has no widget for go in `additional_parameters`, as kohya_ss users write them; options
only sdxl-tui has go in an `sdxl_tui` object, which the GUI ignores and `import-kohya` reads back.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.config.schema import RunConfig
from engine.errors import ConfigError

GUI_FILE = "kohya_gui.json"


@dataclass
class GuiExport:
    """What the kohya_ss GUI export wrote: the JSON, the dataset TOML (or None) and notes."""
    json_path: Path
    dataset_path: Optional[Path]
    notes: list[str] = field(default_factory=list)


def _network(cfg: RunConfig) -> dict[str, Any]:
    n = cfg.network
    extra = sorted(set(n.parsed_args) - {"conv_dim", "conv_alpha"})
    if n.network_module != "networks.lora" or extra:
        raise ConfigError(f"network {n.network_module} {' '.join(n.network_args)}: no kohya_ss LoRA_type writes this",
                          key="network_args", hint="export-kohya without --gui writes the sd-scripts args TOML")
    out: dict[str, Any] = {"LoRA_type": "Kohya LoCon" if n.conv_dim else "Standard",
                           "network_dim": n.network_dim, "network_alpha": n.network_alpha,
                           "network_dropout": n.network_dropout or 0, "network_weights": n.network_weights}
    if n.conv_dim:
        # kohya_ss writes the JSON number as Python formats it, so 2 and 2.0 stay what they were
        raw = n.parsed_args.get("conv_alpha", "1")
        out.update(conv_dim=n.conv_dim, conv_alpha=int(raw) if raw.lstrip("-").isdigit() else float(raw))
    return out


def _rates(cfg: RunConfig, extra: list[str]) -> dict[str, Any]:
    """kohya_ss reads text_encoder_lr 0 as "UNet only" and unet_lr 0 (with a text-encoder rate) as
    "text encoders only", so rates are written out; a second text-encoder rate rides on t5xxl_lr,
    which kohya_ss appends to text_encoder_lr."""
    o, n = cfg.optimizer, cfg.network
    te1, te2 = o.text_encoder_lr1, o.text_encoder_lr2
    out: dict[str, Any] = {"learning_rate": o.learning_rate, "unet_lr": 0.0, "text_encoder_lr": 0.0, "t5xxl_lr": 0.0}
    if o.unet_lr is None and te1 is None and te2 is None and not n.network_train_unet_only:
        return out  # all three 0: kohya_ss passes learning_rate only
    out["unet_lr"] = o.resolved_unet_lr
    if n.network_train_unet_only and te1 is None and te2 is None:
        return out
    out["text_encoder_lr"] = o.resolved_text_encoder_lr1
    if o.resolved_text_encoder_lr2 != o.resolved_text_encoder_lr1:
        out["t5xxl_lr"] = o.resolved_text_encoder_lr2
    if n.network_train_unet_only:
        extra.append("--network_train_unet_only")
    return out


def _length(cfg: RunConfig) -> dict[str, Any]:
    t, o = cfg.training, cfg.optimizer
    warmup = o.lr_warmup_steps
    epochs = t.max_train_epochs if t.max_train_steps is None else None  # sdxl-tui: steps win; sd-scripts: epochs
    out: dict[str, Any] = {"max_train_steps": t.max_train_steps or 0, "max_train_epochs": epochs or 0,
                           "epoch": epochs or 1, "lr_scheduler_num_cycles": o.lr_scheduler_num_cycles,
                           "lr_warmup": 0, "lr_warmup_steps": 0}
    if 0 < warmup < 1:
        out["lr_warmup"] = round(warmup * 100, 6)
    else:
        out["lr_warmup_steps"] = int(warmup)
    return out


def _prompts_text(cfg: RunConfig, config_dir: Path) -> str:
    raw = cfg.sampling.sample_prompts
    if not raw:
        return ""
    p = Path(raw).expanduser()
    p = p if p.is_absolute() else config_dir / p
    if not p.is_file():
        raise ConfigError(f"sample prompts file not found: {p}", key="sample_prompts", hint="check [sampling]")
    return p.read_text(encoding="utf-8-sig")  # the GUI keeps the prompt text itself


def gui_document(cfg: RunConfig, dataset_path: Optional[Path], config_dir: Path) -> dict[str, Any]:
    """The GUI JSON (as a dict) for `cfg`; raises ConfigError for what no GUI setting can express."""
    m, d, o, t, p, c, s, sa, lg = (cfg.model, cfg.dataset, cfg.optimizer, cfg.training, cfg.precision,
                                   cfg.caching, cfg.saving, cfg.sampling, cfg.logging)
    extra: list[str] = []
    doc: dict[str, Any] = {"sdxl": True, "v2": m.v2, "v_parameterization": m.v_parameterization,
                           "pretrained_model_name_or_path": m.pretrained_model_name_or_path, "vae": m.vae,
                           "clip_skip": m.clip_skip or 0,
                           "dataset_config": str(dataset_path) if dataset_path else "", "train_data_dir": "",
                           "reg_data_dir": "", "max_resolution": "", "enable_bucket": False, "caption_extension": "",
                           "bucket_reso_steps": 64, "min_bucket_reso": 256, "max_bucket_reso": 1024,
                           "prior_loss_weight": d.prior_loss_weight,
                           "max_data_loader_n_workers": d.max_data_loader_n_workers}
    doc.update(_network(cfg))
    doc.update(optimizer=o.optimizer_type, optimizer_args=" ".join(o.optimizer_args), lr_scheduler=o.lr_scheduler,
               lr_scheduler_power=o.lr_scheduler_power, max_grad_norm=o.max_grad_norm)
    doc.update(_rates(cfg, extra))
    doc.update(_length(cfg))
    doc.update(train_batch_size=t.train_batch_size, gradient_accumulation_steps=t.gradient_accumulation_steps,
               seed=t.seed, noise_offset_type="Original", noise_offset=t.noise_offset,
               min_snr_gamma=t.min_snr_gamma or 0, mixed_precision=p.mixed_precision,
               gradient_checkpointing=p.gradient_checkpointing, sdxl_no_half_vae=p.no_half_vae,
               dynamo_backend="inductor" if p.torch_compile else "no", xformers="none",
               cache_latents=c.cache_latents, cache_latents_to_disk=c.cache_latents_to_disk,
               sdxl_cache_text_encoder_outputs=c.cache_text_encoder_outputs,
               output_dir=s.output_dir, output_name=s.output_name, save_model_as=s.save_model_as,
               save_precision=s.save_precision, save_every_n_epochs=s.save_every_n_epochs or 0,
               save_every_n_steps=s.save_every_n_steps or 0, save_last_n_epochs=s.save_last_n_epochs or 0,
               save_state=s.save_state, sample_prompts=_prompts_text(cfg, config_dir),
               sample_every_n_steps=sa.sample_every_n_steps or 0, sample_every_n_epochs=sa.sample_every_n_epochs or 0,
               sample_sampler=sa.sample_sampler, logging_dir=lg.logging_dir, log_with=lg.log_with,
               num_processes=1, num_machines=1, multi_gpu=False, gpu_ids="", num_cpu_threads_per_process=2)
    for flag, on in (("cache_text_encoder_outputs_to_disk", c.cache_text_encoder_outputs_to_disk),
                     ("sample_at_first", sa.sample_at_first), ("fused_backward_pass", p.fused_backward_pass)):
        if on:
            extra.append(f"--{flag}")
    if o.max_grad_norm == 0:
        extra.append("--max_grad_norm=0")  # the GUI drops a 0 (as the edgLoRAXL preset works around)
    if lg.log_prefix:
        extra.append(f"--log_prefix={lg.log_prefix}")
    for key in ("validate_every_n_steps", "validate_every_n_epochs", "max_validation_steps"):  # no GUI widget
        if getattr(lg, key) is not None:
            extra.append(f"--{key}={getattr(lg, key)}")
    if any(" " in w or '"' in w for w in extra):
        raise ConfigError("a value with spaces cannot go through additional_parameters (kohya_ss splits on spaces)",
                          hint="rename it without spaces")
    doc["additional_parameters"] = " ".join(extra)
    doc["sdxl_tui"] = {"skip_bad_images": d.skip_bad_images, "log_every_n_steps": lg.log_every_n_steps}
    return doc


def export_kohya_gui(cfg: RunConfig, out_dir: str | Path, *, config_dir: Optional[Path] = None) -> GuiExport:
    """Write out_dir/kohya_gui.json (+ dataset.toml with absolute image paths); atomic writes."""
    from engine.interop.kohya_export import DATASET_FILE, write_dataset_toml
    from engine.storage.atomic import atomic_write_text

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    base = config_dir or Path.cwd()
    notes: list[str] = []
    raw = cfg.dataset.dataset_config
    source = (Path(raw).expanduser() if Path(raw).expanduser().is_absolute() else base / raw) if raw else None
    dataset_path = write_dataset_toml(source, out / DATASET_FILE) if source else None
    if dataset_path is None:
        notes.append("no dataset_config in this config: pick the image folder in the GUI")
    doc = gui_document(cfg, dataset_path, base)
    if doc["additional_parameters"]:
        notes.append(f"additional_parameters: {doc['additional_parameters']} (no GUI widget for these)")
    path = atomic_write_text(out / GUI_FILE, json.dumps(doc, indent=4) + "\n")
    notes.append(f"open it in kohya_ss: LoRA tab -> Configuration -> Load ({shlex.quote(str(path))})")
    return GuiExport(path, dataset_path, notes)
