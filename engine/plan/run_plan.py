"""What a run will do, computed from the config and the files alone (no model loaded).

Used by `sdxl-tui plan` and by the wizard's review screen (both read the same `Plan`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from engine.data.batching import DEFAULT_MAX_TRAIN_STEPS, batches_per_epoch, training_length
from engine.data.buckets import Size
from engine.data.dataset_config import DatasetConfig, load_run_dataset_config
from engine.data.scan import ScannedDataset, SubsetStats, scan_dataset
from engine.plan.vram import VramEstimate, estimate_vram
from engine.units import human_bytes

if TYPE_CHECKING:
    from engine.config.schema import RunConfig

LATENT_CHANNELS = 4
TEXT_FLOATS_PER_CAPTION = 77 * 2048 + 1280  # both encoders' hidden states + pooled output
FLOAT_BYTES = 4


@dataclass(frozen=True)
class BucketCount:
    """Images per epoch (repeats counted) in one bucket of one dataset; the bucket is (width, height) in pixels."""
    dataset_index: int
    bucket: Size
    images: int  # per epoch, repeats counted
    batch_size: int

    @property
    def batches(self) -> int:
        """Batches this bucket makes per epoch (a partial batch counts)."""
        return math.ceil(self.images / self.batch_size)


@dataclass(frozen=True)
class Plan:
    """What a run will do, worked out before any model loads: steps and epochs, buckets, cache sizes (bytes), the
    VRAM estimate, warnings and problems."""
    dataset_config: Path
    scanned: ScannedDataset
    buckets: tuple[BucketCount, ...]
    world_size: int
    gradient_accumulation_steps: int
    batches_per_epoch: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    limited_by: str  # "max_train_steps", "max_train_epochs" or "default"
    latent_cache_bytes: int
    text_cache_bytes: int
    latents_to_disk: bool
    text_to_disk: bool
    vram: Optional[VramEstimate] = None
    config_warnings: tuple[str, ...] = ()  # engine/plan/checks.py: the ones `train` gives too
    schedule: str = ""  # the lr schedule and its warm-up length in steps

    @property
    def subsets(self) -> tuple[SubsetStats, ...]:
        """Per-subset counts from the scan."""
        return self.scanned.subsets

    @property
    def problems(self) -> tuple[str, ...]:
        """What would stop training (from the dataset scan)."""
        return self.scanned.problems

    @property
    def warnings(self) -> tuple[str, ...]:
        """Config warnings, then the dataset scan's."""
        return self.config_warnings + self.scanned.warnings

    @property
    def ok(self) -> bool:
        """True when nothing stops the run and it has steps to train."""
        return not self.problems and self.total_steps > 0

    def lines(self) -> list[str]:
        """The plan as text lines (what `sdxl-tui plan` prints)."""
        return plan_lines(self)






def cache_sizes(scanned: ScannedDataset) -> tuple[int, int]:
    """(latent bytes, text-encoder output bytes) for caching every image once (fp32)."""
    flips = {s.index: s.flip_aug for s in scanned.config.all_subsets()}
    latents = 0
    for item in scanned.items:
        per = LATENT_CHANNELS * (item.bucket[1] // 8) * (item.bucket[0] // 8) * FLOAT_BYTES
        latents += per * (2 if flips[item.subset_index] else 1)
    text = len(scanned.items) * TEXT_FLOATS_PER_CAPTION * FLOAT_BYTES
    return latents, text


def make_plan(cfg: RunConfig, dataset_config: Optional[DatasetConfig] = None, *, base_dir: Path | str | None = None,
              world_size: int = 1, check: bool = True) -> Plan:
    """Scan `dataset_config` (parsed already, e.g. the wizard's draft held in memory; when None,
    the file `cfg` names is read, relative to `base_dir`, the run config's folder) and count.
    File problems go into `plan.problems`; config errors raise ConfigError, from the same check
    `train` makes (engine/plan/checks.py). `check=False` is for the wizard, which lists the same
    rules' issues beside the plan itself (its prompts file is not written yet)."""
    from engine.plan.checks import check_config

    if dataset_config is None:
        dataset_config = load_run_dataset_config(cfg, base_dir)
    path = dataset_config.path if dataset_config.path is not None else Path(cfg.dataset.dataset_config or "(draft)")
    # the same rule check and messages as `train`
    warnings = check_config(cfg, base_dir, dataset_config).warnings if check else ()
    scanned = scan_dataset(dataset_config, skip_bad_images=cfg.dataset.skip_bad_images, strict=False,
                           seed=cfg.training.seed)
    buckets = tuple(BucketCount(d, bucket, n, dataset_config.datasets[d].batch_size)
                    for (d, bucket), n in scanned.bucket_histogram().items())
    batches = batches_per_epoch(scanned, world_size)
    accumulation = cfg.training.gradient_accumulation_steps
    length = training_length(batches, accumulation, cfg.training.max_train_steps, cfg.training.max_train_epochs)
    steps_per_epoch, total, epochs, limit = length.steps_per_epoch, length.total_steps, length.epochs, length.limit
    latents, text = cache_sizes(scanned)
    plan = Plan(path, scanned, buckets, world_size, accumulation, batches, steps_per_epoch, epochs, total, limit,
                latents, text, cfg.caching.cache_latents_to_disk, cfg.caching.cache_text_encoder_outputs_to_disk)
    from engine.config.optimizer_names import schedule_line

    return replace(plan, vram=estimate_vram(cfg, plan), config_warnings=warnings,
                   schedule=schedule_line(cfg.optimizer, total))


# --- text ------------------------------------------------------------------------------

def _dataset_lines(plan: Plan) -> list[str]:
    out = [f"Dataset config: {plan.dataset_config}"]
    for spec in plan.scanned.config.datasets:
        w, h = spec.resolution
        buckets = (f"buckets {spec.min_bucket_reso}..{spec.max_bucket_reso} step {spec.bucket_reso_steps}"
                   + (", no upscale" if spec.bucket_no_upscale else "")) if spec.enable_bucket else "no buckets"
        out.append(f"  dataset {spec.index}: resolution {w}x{h}, batch size {spec.batch_size} "
                   f"(from {spec.origin('batch_size')}), {buckets}")
        tokens = {sub.index: sub.class_tokens for sub in plan.scanned.config.all_subsets()}
        for stats in plan.subsets:
            if stats.dataset_index != spec.index:
                continue
            kind = "regularisation" if stats.is_reg else "training"
            line = (f"    subset {stats.subset_index} ({kind}): {stats.source} — {stats.images} images "
                    f"× {stats.num_repeats} repeats")
            if tokens.get(stats.subset_index):
                line += f", class tokens {tokens[stats.subset_index]!r}"
            extras = [f"{n} {what}" for n, what in (
                (stats.missing_captions, "without caption"), (stats.empty_captions, "with blank caption"),
                (stats.orphan_captions, "captions without image"), (stats.unreadable, "unreadable"),
                (stats.unused_reg, "unused")) if n]
            out.append(line + (f"; {', '.join(extras)}" if extras else ""))
    return out


def _bucket_lines(plan: Plan) -> list[str]:
    if not plan.buckets:
        return ["Buckets: none (no usable images)"]
    widest = max(b.images for b in plan.buckets)
    out = ["Buckets (images per epoch, repeats counted):"]
    for b in plan.buckets:
        bar = "█" * max(1, round(30 * b.images / widest))
        out.append(f"  [{b.dataset_index}] {b.bucket[0]:>4}x{b.bucket[1]:<4} {b.images:>6}  {bar}")
    return out


def _length_lines(plan: Plan) -> list[str]:
    limit = {"max_train_steps": "max_train_steps", "max_train_epochs": "max_train_epochs",
             "default": f"the default {DEFAULT_MAX_TRAIN_STEPS} steps "
                        "(neither max_train_steps nor max_train_epochs set)"}
    ranks = f" per process ({plan.world_size} processes)" if plan.world_size > 1 else ""
    if plan.batches_per_epoch == 0 and plan.scanned.items:
        return [f"  ✗ fewer batches per epoch than the {plan.world_size} training processes: add images or repeats"]
    return [
        f"Batches per epoch{ranks}: {plan.batches_per_epoch}; steps per epoch: {plan.steps_per_epoch} "
        f"(gradient accumulation {plan.gradient_accumulation_steps})",
        f"Training: {plan.total_steps} steps over {plan.epochs} epochs, limited by {limit[plan.limited_by]}",
        *([plan.schedule] if plan.schedule else []),
        _effective_batch_line(plan),
    ]


def _effective_batch_line(plan: Plan) -> str:
    sizes = sorted({d.batch_size for d in plan.scanned.config.datasets}) or [1]
    per_process = "/".join(str(size) for size in sizes)
    images = "/".join(str(size * plan.world_size * plan.gradient_accumulation_steps) for size in sizes)
    return (f"Effective batch: {per_process} per process × {plan.world_size} processes × "
            f"{plan.gradient_accumulation_steps} accumulation = {images} images per step")


def _cache_lines(plan: Plan) -> list[str]:
    where_latents = "on disk" if plan.latents_to_disk else "in memory if cached"
    where_text = "on disk" if plan.text_to_disk else "in memory if cached"
    return [f"Caches: latents {human_bytes(plan.latent_cache_bytes)} ({where_latents}), "
            f"text-encoder outputs {human_bytes(plan.text_cache_bytes)} ({where_text})"]


def _vram_lines(plan: Plan) -> list[str]:
    v = plan.vram
    if v is None:
        return []
    parts = ", ".join(f"{name} {gb:.2f}" for name, gb in v.breakdown() if gb > 0)
    return [f"VRAM estimate: {v.total:.1f} GB at {v.resolution[0]}x{v.resolution[1]} × batch {v.batch_size} "
            f"({parts}; LoRA {v.lora_params / 1e6:.1f} M parameters)"]


def plan_lines(plan: Plan) -> list[str]:
    """The plan as text lines: dataset, buckets, length, caches, VRAM, manifest hash, then warnings and problems."""
    lines = _dataset_lines(plan) + _bucket_lines(plan) + _length_lines(plan) + _cache_lines(plan) + _vram_lines(plan)
    lines.append(f"Manifest hash: {plan.scanned.manifest_hash()[:16]}")
    if plan.warnings:
        lines.append(f"Warnings ({len(plan.warnings)}):")
        lines.extend(f"  ! {w}" for w in plan.warnings)
    if plan.problems:
        lines.append(f"Problems ({len(plan.problems)}) — training would stop:")
        lines.extend(f"  ✗ {p}" for p in plan.problems)
    return lines
