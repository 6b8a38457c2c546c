"""What a run writes while it trains: LoRA files, state folders and sample images, each
checked for disk space first and announced with an event. Called by engine/train/run.py through
the Trainer's callbacks; `session` is run.py's _Session.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

from engine.events.types import SAMPLING, TRAINING, Phase, Sample
from engine.outputs import checkpoint, retention
from engine.storage import disk


def save_lora(session, path: Path, step: int, epoch: int, total_steps: int, total_epochs: int) -> str:
    from engine.events.types import Saved
    from engine.lora.file import TrainingInfo, build_metadata

    if not session.accelerator.is_main_process:
        return str(path)
    info = TrainingInfo(steps=step, epoch=epoch, started_at=session.started_at, finished_at=time.time(),
                        session_id=session.session_id, num_epochs=total_epochs, max_train_steps=total_steps,
                        num_batches_per_epoch=session.data.batches_per_epoch,
                        **data_info(session.data))
    metadata = build_metadata(session.cfg, training_info=info)
    from engine.outputs.metadata import apply_saving_options

    metadata = apply_saving_options(metadata, session.cfg.saving)
    needed = disk.lora_file_bytes(session.network, session.cfg.saving.save_precision)
    what = f"the LoRA {path.name}"
    disk.ensure_space(path.parent, needed, what)
    saving = session.control.saving
    saving.begin(what, {"lora": needed})
    saving.writing(path.parent / f".{path.name}.*.tmp")  # engine.storage.atomic's temporary name
    try:
        with disk.write_errors(path.parent, what, needed):
            checkpoint.save_lora_file(path, session.network, metadata, session.cfg.saving.save_precision)
        saving.part_done("lora")
    finally:
        saving.end()
    session.emit(Saved(time=time.time(), path=str(path), step=step, epoch=epoch, kind="lora"))
    return str(path)


def data_info(data) -> dict:
    """Dataset figures for the LoRA metadata (sd-scripts' ss_* keys)."""
    first = data.scanned.config.datasets[0]
    resolution = first.resolution
    return dict(num_train_images=data.num_train_images, num_reg_images=data.num_reg_images,
                bucket_info=data.bucket_info, tag_frequency=data.tag_frequency,
                dataset_manifest_hash=data.manifest_hash, batch_size_per_device=first.batch_size,
                resolution=(resolution, resolution) if isinstance(resolution, int) else tuple(resolution),
                **datasets_metadata(data.scanned))


# Per-subset options sd-scripts records in ss_datasets, so a LoRA file tells how it was trained.
_SUBSET_KEYS = ("num_repeats", "shuffle_caption", "keep_tokens", "keep_tokens_separator", "color_aug",
                "flip_aug", "random_crop", "caption_dropout_rate", "caption_dropout_every_n_epochs",
                "caption_tag_dropout_rate", "caption_prefix", "caption_suffix", "class_tokens", "is_reg",
                "token_warmup_min", "token_warmup_step")


def datasets_metadata(scanned) -> dict:
    """`datasets` (ss_datasets) and `dataset_dirs` (ss_dataset_dirs) in sd-scripts' shape."""
    counts = {(s.dataset_index, s.subset_index): s.images for s in scanned.subsets}
    datasets, dirs = [], {}
    for spec in scanned.config.datasets:
        subsets = []
        for sub in spec.subsets:
            images = counts.get((spec.index, sub.index), 0)
            entry = {key: getattr(sub, key) for key in _SUBSET_KEYS}
            entry.update(img_count=images, image_dir=sub.source.name)
            subsets.append(entry)
            dirs[sub.source.name] = {"n_repeats": sub.num_repeats, "img_count": images}
        res = spec.resolution
        datasets.append({
            "is_dreambooth": True, "batch_size_per_device": spec.batch_size,
            "num_train_images": sum(s["img_count"] * s["num_repeats"] for s in subsets if not s["is_reg"]),
            "num_reg_images": sum(s["img_count"] for s in subsets if s["is_reg"]),
            "resolution": [res, res] if isinstance(res, int) else list(res),
            "enable_bucket": spec.enable_bucket, "min_bucket_reso": spec.min_bucket_reso,
            "max_bucket_reso": spec.max_bucket_reso, "subsets": subsets,
        })
    return {"datasets": datasets, "dataset_dirs": dirs}


def save_state(session, optimizer, scheduler, progress) -> str:
    from engine.config.toml_file import dumps_config
    from engine.events.types import Saved

    if not session.accelerator.is_main_process:
        return ""
    import dataclasses

    root = session.output_dir / checkpoint.STATE_ROOT
    lora_bytes = disk.lora_file_bytes(session.network, "fp32")
    optimizer_bytes = disk.optimizer_state_bytes(optimizer)
    disk.ensure_space(root, lora_bytes + optimizer_bytes, "the training state")
    progress = dataclasses.replace(progress, dataset_hash=session.data.manifest_hash)
    saving = session.control.saving
    saving.begin("the training state", {"lora": lora_bytes, "optimizer": optimizer_bytes, "small files": 65536})
    try:
        with disk.write_errors(root, "the training state", lora_bytes + optimizer_bytes):
            path = checkpoint.save_state(session.output_dir, network=session.network, optimizer=optimizer,
                                         scheduler=scheduler, scaler=session.accelerator.scaler, progress=progress,
                                         config_text=dumps_config(session.cfg), saving=saving,
                                         keep=retention.state_keep_count(session.cfg.saving))
    finally:
        saving.end()
    retention.prune_states_by_step(session.output_dir, session.cfg.saving, progress.global_step)
    session.emit(Saved(time=time.time(), path=str(path), step=progress.global_step, epoch=progress.epoch,
                       kind="state"))
    return str(path)


def make_samples(session, step: int, epoch: Optional[int]) -> None:
    from engine.outputs.sampling import generate_samples

    cfg, prompts = session.cfg, session.sample_prompts
    if not prompts or not session.accelerator.is_main_process:
        return
    session.emit(Phase(time=time.time(), name=SAMPLING, total=len(prompts)))
    session.network.eval()
    try:
        written = generate_samples(session.model, prompts, out_dir=session.output_dir,
                                   output_name=cfg.saving.output_name, step=step, epoch=epoch,
                                   sampler=cfg.sampling.sample_sampler, device=session.accelerator.device,
                                   dtype=session.weight_dtype)
    finally:
        session.network.train()
    emit_samples(session.emit, written, step)
    if step > 0:
        session.emit(Phase(time=time.time(), name=TRAINING))


def emit_samples(emit: Callable, written: list, step: int) -> None:
    for path, prompt in written:
        emit(Sample(time=time.time(), path=str(path), prompt=prompt, step=step))
