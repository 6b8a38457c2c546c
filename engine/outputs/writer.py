"""What a run writes while it trains: LoRA files, state folders and sample images, each
checked for disk space first and announced with an event. engine/train/run.py builds one
`RunOutputs` per run and hands it to the Trainer (engine/train/loop.py).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from engine.events.types import SAMPLING, TRAINING, Phase, Sample, Saved
from engine.outputs import checkpoint, retention
from engine.storage import disk

if TYPE_CHECKING:
    from engine.config.sample_prompts import SamplePrompt
    from engine.config.schema import RunConfig
    from engine.control.run_control import RunControl
    from engine.data.training_data import TrainingData
    from engine.lora.network import LoRANetwork
    from engine.model.load import SdxlModel


@dataclass
class RunOutputs:
    """Everything one run writes besides its event log, on the main process only (the other
    processes of a multi-process run write nothing and return what would have been written).

    `optimizer` is what a state saves (a FusedBackward when the fused backward pass is on);
    `total_steps` / `total_epochs` go into the LoRA metadata (ss_max_train_steps, ss_num_epochs).
    """

    cfg: RunConfig
    emit: Callable[[Any], None]
    control: RunControl
    output_dir: Path
    accelerator: Any  # accelerate.Accelerator
    model: SdxlModel
    network: LoRANetwork
    data: TrainingData
    weight_dtype: Any  # torch.dtype of the frozen model
    optimizer: Any
    scheduler: Any
    total_steps: int
    total_epochs: int
    started_at: float  # seconds since the epoch (time.time())
    session_id: int
    sample_prompts: Optional[list[SamplePrompt]] = None
    # Wraps LoRA saves and samples: a schedule-free optimizer shows them its averaged weights
    # (engine/train/optimizer_setup.in_eval_mode); the identity for every other optimizer.
    seen_weights: Callable[[Callable], Callable] = lambda fn: fn
    # engine.train.ema.LoraEma (ema_decay): its weights are what LoRA files and samples hold;
    # a state keeps the raw weights plus the EMA's own state.
    ema: Any = None

    def save_lora(self, path: Path, step: int, epoch: int) -> str:
        """Write the LoRA (kohya keys, sd-scripts' ss_* metadata) to `path`; returns the path.
        Raises DiskFullError / OutputError (engine/storage/disk.py) before or while writing."""
        return self.seen_weights(self._write_lora)(path, step, epoch)

    def _write_lora(self, path: Path, step: int, epoch: int) -> str:
        from engine.lora.file import TrainingInfo, build_metadata

        if not self.accelerator.is_main_process:
            return str(path)
        info = TrainingInfo(steps=step, epoch=epoch, started_at=self.started_at, finished_at=time.time(),
                            session_id=self.session_id, num_epochs=self.total_epochs,
                            max_train_steps=self.total_steps, num_batches_per_epoch=self.data.batches_per_epoch,
                            **data_info(self.data))
        metadata = build_metadata(self.cfg, training_info=info)
        from engine.outputs.metadata import apply_saving_options

        metadata = apply_saving_options(metadata, self.cfg.saving)
        needed = disk.lora_file_bytes(self.network, self.cfg.saving.save_precision)
        what = f"the LoRA {path.name}"
        disk.ensure_space(path.parent, needed, what)
        saving = self.control.saving
        saving.begin(what, {"lora": needed})
        saving.writing(path.parent / f".{path.name}.*.tmp")  # engine.storage.atomic's temporary name
        try:
            with disk.write_errors(path.parent, what, needed), self.ema_weights():
                checkpoint.save_lora_file(path, self.network, metadata, self.cfg.saving.save_precision)
            saving.part_done("lora")
        finally:
            saving.end()
        self.emit(Saved(time=time.time(), path=str(path), step=step, epoch=epoch, kind="lora"))
        return str(path)

    def save_state(self, position: checkpoint.Position) -> str:
        """Write a state folder for `position` (engine/outputs/checkpoint.py's format); returns
        its path ("" on the other processes). Raises DiskFullError / OutputError."""
        from engine.config.toml_file import dumps_config

        if not self.accelerator.is_main_process:
            return ""
        root = self.output_dir / checkpoint.STATE_ROOT
        lora_bytes = disk.lora_file_bytes(self.network, "fp32")
        optimizer_bytes = disk.optimizer_state_bytes(self.optimizer)
        disk.ensure_space(root, lora_bytes + optimizer_bytes, "the training state")
        progress = dataclasses.replace(position, dataset_hash=self.data.manifest_hash)
        saving = self.control.saving
        saving.begin("the training state", {"lora": lora_bytes, "optimizer": optimizer_bytes, "small files": 65536})
        try:
            with disk.write_errors(root, "the training state", lora_bytes + optimizer_bytes):
                path = checkpoint.save_state(self.output_dir, network=self.network, optimizer=self.optimizer,
                                             scheduler=self.scheduler, scaler=self.accelerator.scaler,
                                             progress=progress, config_text=dumps_config(self.cfg), saving=saving,
                                             ema=self.ema.state_dict() if self.ema is not None else None,
                                             keep=retention.state_keep_count(self.cfg.saving))
        finally:
            saving.end()
        retention.prune_states_by_step(self.output_dir, self.cfg.saving, progress.global_step)
        self.emit(Saved(time=time.time(), path=str(path), step=progress.global_step, epoch=progress.epoch,
                        kind="state"))
        return str(path)
        return str(path)

    def make_samples(self, step: int, epoch: Optional[int]) -> None:
        """One image per sample prompt (engine/outputs/sampling.py), network in eval mode meanwhile;
        a failed sample is a warning event (training goes on)."""
        self.seen_weights(self._write_samples)(step, epoch)

    def _write_samples(self, step: int, epoch: Optional[int]) -> None:
        from engine.outputs.sampling import generate_samples

        cfg, prompts = self.cfg, self.sample_prompts
        if not prompts or not self.accelerator.is_main_process:
            return
        self.emit(Phase(time=time.time(), name=SAMPLING, total=len(prompts)))
        self.network.eval()
        written: list = []
        try:
            with self.ema_weights():
                written = generate_samples(self.model, prompts, out_dir=self.output_dir,
                                           output_name=cfg.saving.output_name, step=step, epoch=epoch,
                                           sampler=cfg.sampling.sample_sampler, device=self.accelerator.device,
                                           dtype=self.weight_dtype)
        except Exception as exc:  # a sample is a look at the run, never a reason to lose it
            self.sample_failed(step, exc)
        finally:
            self.network.train()
        emit_samples(self.emit, written, step)
        if step > 0:
            self.emit(Phase(time=time.time(), name=TRAINING))

    def ema_weights(self):
        """A context: the EMA weights in the network while a LoRA file is written or samples are
        made (ema_decay); nothing changes without EMA."""
        from contextlib import nullcontext

        return self.ema.swapped_in() if self.ema is not None else nullcontext()

    def sample_failed(self, step: int, exc: Exception) -> None:
        """A failed sample becomes a warning event; training goes on (memory it held is given back)."""
        from engine.events.types import Warning_

        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # only a courtesy before the warning
            pass
        self.emit(Warning_(time=time.time(), message=f"sampling at step {step} failed ({type(exc).__name__}: {exc}); "
                                                     "no samples this time, training goes on"))


def ema_weights(session):
    """The EMA weights in the network while a LoRA file is written or samples made (ema_decay);
    the raw weights otherwise."""
    from contextlib import nullcontext

    ema = getattr(getattr(session, "hooks", None), "ema", None)
    return ema.swapped_in() if ema is not None else nullcontext()


def data_info(data) -> dict:
    """Dataset figures for the LoRA metadata (sd-scripts' ss_* keys)."""
    first = data.scanned.config.datasets[0]
    resolution = first.resolution
    return dict(num_train_images=data.num_train_images, num_reg_images=data.num_reg_images,
                bucket_info=data.bucket_info, tag_frequency=data.tag_frequency,
                dataset_manifest_hash=data.manifest_hash, batch_size_per_device=first.batch_size,
                resolution=(resolution, resolution) if isinstance(resolution, int) else tuple(resolution),
                num_validation_images=len(data.scanned.validation_items), validation_split=first.validation_split,
                validation_seed=first.validation_seed, **datasets_metadata(data.scanned))


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


def emit_samples(emit: Callable, written: list, step: int) -> None:
    """Emit a Sample event for each (path, prompt) written at `step`."""
    for path, prompt in written:
        emit(Sample(time=time.time(), path=str(path), prompt=prompt, step=step))
