"""The training loop: batches -> loss -> LoRA update, with saves, samples and commands between
optimizer steps. Everything it needs is built by engine/train/run.py and handed over in `Trainer`.

Host/device syncs: the loss stays on the device between logging intervals; `.item()` (and the
NaN check) happens only every `log_every_n_steps` optimizer steps, at a stop, and at the end.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from engine.errors import TrainingDiverged
from engine.events.types import Step, Validation
from engine.outputs import checkpoint, retention
from engine.outputs.checkpoint import Position
from engine.train.loss import LossOptions, diffusion_loss, training_target
from engine.train.memory import snapshot
from engine.train.noise import NoiseOptions, noise_and_timesteps
from engine.train.optimizers import group_lrs
from engine.train.precision import compute_dtype_of

if TYPE_CHECKING:
    from engine.config.schema import RunConfig
    from engine.control.run_control import RunControl
    from engine.data.training_data import TrainingData
    from engine.lora.network import LoRANetwork
    from engine.model.load import SdxlModel
    from engine.outputs.writer import RunOutputs
    from engine.train.fused_backward import FusedBackward

AGREED_COMMANDS = ("save_now", "sample_now")  # commands every process acts on together


@dataclass
class Meter:
    """Loss and speed over one logging interval (device tensors until `flush`)."""

    losses: list = field(default_factory=list)  # one 0-dim device tensor per optimizer step
    paths: list = field(default_factory=list)  # the image files of each step's batches
    started: float = field(default_factory=time.perf_counter)
    smoothed: Optional[float] = None

    def add(self, loss, paths: list[str]) -> None:
        """Record one optimizer step's loss (0-dim fp32 device tensor, the mean over its accumulated
        batches; not read until `Trainer.log`) and the image paths of its batches.
        """
        self.losses.append(loss)
        self.paths.append(paths)


@dataclass
class Trainer:
    """One run's optimizer steps over `data`; `position` says where it stands (resumed runs
    start from the saved one). Saves and samples go through `outputs`."""

    cfg: RunConfig
    model: SdxlModel  # base weights frozen, LoRA applied
    network: LoRANetwork
    optimizer: Any  # accelerate-prepared optimizer, or the parent of a FusedBackward
    scheduler: Any  # torch LR scheduler, or schedulers.OptimizerOwnSchedule
    fused: Optional[FusedBackward]
    accelerator: Any  # accelerate.Accelerator
    data: TrainingData
    emit: Callable[[Any], None]
    control: Optional[RunControl]
    output_dir: Path
    total_steps: int
    total_epochs: int
    trainable_params: list
    train_text_encoders: bool
    outputs: Optional[RunOutputs]  # saves and samples (None only where nothing is saved, e.g. a benchmark)
    images_per_step: int = 1
    position: Position = field(default_factory=Position)
    unet: Any = None  # what to call for the UNet forward (DDP-wrapped / compiled); model.unet when None
    meter: Meter = field(default_factory=Meter)
    hooks: Any = None  # engine.train.step_hooks.StepHooks (max-norm, EMA) or None
    validator: Any = None  # engine.train.validation.Validator, or None without held-out images

    # ------------------------------------------------------------------ one batch

    def batch_loss(self, batch, noise_options: Optional[NoiseOptions] = None, timesteps=None):
        """Loss of one batch (a device tensor, graph attached unless under no_grad). The validation
        loss passes fixed `timesteps` (`[B]` long) and may pass other `noise_options`."""
        import torch

        from engine.model.encode import encode_captions, vae_encode

        device = self.accelerator.device
        latents = batch.latents if batch.latents is not None else vae_encode(self.model.vae, batch.pixels)
        latents = latents.to(device, torch.float32)
        with self.accelerator.autocast():
            if batch.text_hidden is not None:
                hidden, pooled = batch.text_hidden.to(device), batch.text_pooled.to(device)
            else:
                hidden, pooled = encode_captions(self.model, list(batch.captions), device)
            noise_scheduler = self.model.noise_scheduler
            noise, noisy, timesteps = noise_and_timesteps(
                latents, noise_scheduler, noise_options or NoiseOptions.from_config(self.cfg.training),
                timesteps.to(device) if timesteps is not None else None)
            unet_dtype = compute_dtype_of(self.model.unet, torch.float32)  # not float8 with fp8_base
            unet = self.unet if self.unet is not None else self.model.unet
            prediction = unet(
                noisy.to(unet_dtype), timesteps, encoder_hidden_states=hidden.to(unet_dtype),
                added_cond_kwargs={"text_embeds": pooled.to(unet_dtype),
                                   "time_ids": batch.time_ids.to(device, unet_dtype)},
            ).sample
        target = training_target(noise_scheduler, latents, noise, timesteps)
        weights = batch.loss_weights.to(device) if batch.loss_weights is not None else None
        return diffusion_loss(prediction, target, timesteps=timesteps, noise_scheduler=noise_scheduler,
                              loss_weights=weights, options=LossOptions.from_config(self.cfg.training))

    def optimizer_step(self) -> None:
        """Clip, step, clear (the fused path already stepped inside the backward pass)."""
        if self.fused is None:
            max_norm = self.cfg.optimizer.max_grad_norm
            if max_norm > 0:
                self.accelerator.clip_grad_norm_(self.trainable_params, max_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if getattr(self.optimizer, "step_was_skipped", False):
                return  # fp16 grad scaler found inf/NaN gradients and skipped: keep the schedule in place
        self.scheduler.step()

    # ------------------------------------------------------------------ the loop

    def train(self, *, skip_first_batches: int = 0) -> Position:
        """Optimizer steps until `total_steps` or a stop; returns the position reached.

        The objects alive now (model, network, optimizer: hundreds of thousands for the full
        UNet) are frozen out of Python's cyclic GC for the loop, so the GC's full passes do
        not walk them every few steps (issue 17); they are unfrozen when the loop ends."""
        import gc

        gc.freeze()  # no gc.collect() first: a full collection costs ~0.7 s in a process with many objects
        try:
            return self._train(skip_first_batches)
        finally:
            gc.unfreeze()

    def _train(self, skip_first_batches: int) -> Position:
        pos = self.position
        accumulation = self.cfg.training.gradient_accumulation_steps
        meter = self.meter
        meter.started = time.perf_counter()
        skip = skip_first_batches
        while pos.global_step < self.total_steps and not pos.stopped:
            epoch = pos.epoch
            batches = self.data.batches_per_epoch
            step_loss, step_paths = None, []
            for index, batch in enumerate(self.data.epoch_batches(epoch, skip=skip), start=skip):
                group_start = (index // accumulation) * accumulation
                group_size = min(accumulation, batches - group_start)
                loss = self.batch_loss(batch)
                if group_size > 1:  # no op (and no autograd node) for the usual single batch per step
                    loss = loss / group_size
                self.accelerator.backward(loss)
                step_loss = loss.detach() if step_loss is None else step_loss + loss.detach()
                step_paths.extend(str(p) for p in batch.paths)
                if index + 1 < group_start + group_size:
                    continue  # accumulate more batches before the optimizer step
                self.optimizer_step()
                pos.global_step += 1
                if self.hooks is not None:
                    self.hooks.after_step(pos.global_step)
                pos.batches_done_in_epoch = index + 1
                meter.add(step_loss, step_paths)
                step_loss, step_paths = None, []
                self.after_step()
                if pos.global_step >= self.total_steps or pos.stopped:
                    break
            skip = 0
            if pos.batches_done_in_epoch >= batches:
                pos.epoch += 1
                pos.batches_done_in_epoch = 0
                if not pos.stopped:
                    self.after_epoch(pos.epoch)
        if not pos.stopped and pos.batches_done_in_epoch and self.validator is not None:
            # max_train_steps ended the epoch early: sd-scripts still runs its epoch validation
            self.validate("epoch", pos.epoch + 1, self.validator.due_at_epoch(pos.epoch + 1))
        self.log()
        return pos

    # ------------------------------------------------------------------ between steps

    def after_step(self) -> None:
        """After each optimizer step: log at logging points, act on stop / save / sample requests, then the
        scheduled step saves (with pruning), validation and samples.
        """
        pos, cfg = self.position, self.cfg
        finished = pos.global_step >= self.total_steps
        at_log_point = pos.global_step % cfg.logging.log_every_n_steps == 0 or finished
        if at_log_point:
            self.log()
        if self.control is not None:
            stop, commands = self.requests(at_log_point)
            if stop:
                self.stop()
                return
            for command in commands:
                if command == "save_now":
                    self.save_step_checkpoint(with_state=True)
                elif command == "sample_now":
                    self.paused(self.outputs.make_samples, pos.global_step, None)
        every = cfg.saving.save_every_n_steps
        if every and pos.global_step % every == 0 and not finished:
            self.save_step_checkpoint(with_state=cfg.saving.save_state)
            if cfg.saving.save_last_n_steps:
                retention.prune_step_files(self.output_dir, cfg.saving.output_name, pos.global_step,
                                           cfg.saving.save_last_n_steps)
        if self.validator is not None:
            self.validate("step", pos.epoch + 1, self.validator.due_at_step(pos.global_step))
        every = cfg.sampling.sample_every_n_steps
        # sd-scripts: with sample_every_n_epochs set, sample_every_n_steps is ignored.
        if every and not cfg.sampling.sample_every_n_epochs and pos.global_step % every == 0:
            self.paused(self.outputs.make_samples, pos.global_step, None)

    def requests(self, at_log_point: bool) -> tuple[bool, list[str]]:
        """(stop?, commands) to act on after this step.

        Several processes must stop and save at the same step (a rank that leaves the loop alone
        leaves the others waiting in the next gradient all-reduce), and a command may reach one
        rank only (the dashboard's control file is read by rank 0). So with several processes
        requests are decided together at logging points, where the loop reads the device anyway:
        what any rank was asked, every rank does."""
        if self.accelerator.num_processes <= 1:
            return self.control.stop_requested, list(self.control.pending_commands())
        if not at_log_point:
            return False, []
        import torch

        asked = set(self.control.pending_commands())
        flags = torch.tensor([float(self.control.stop_requested)] + [float(c in asked) for c in AGREED_COMMANDS],
                             device=self.accelerator.device)
        agreed = self.accelerator.reduce(flags, reduction="sum").cpu().tolist()
        return agreed[0] > 0, [c for c, n in zip(AGREED_COMMANDS, agreed[1:]) if n > 0]

    def after_epoch(self, epoch: int) -> None:
        """`epoch` is the number of epochs completed (1-based, as in file names)."""
        cfg, pos = self.cfg, self.position
        if self.validator is not None:  # before the epoch's save, as in sd-scripts
            self.validate("epoch", epoch, self.validator.due_at_epoch(epoch))
        finished = pos.global_step >= self.total_steps or epoch >= self.total_epochs
        every = retention.epoch_save_interval(cfg.saving, self.total_epochs)
        if every and epoch % every == 0 and not finished:
            self.log()  # never save weights from an interval whose loss went NaN
            path = self.output_dir / checkpoint.epoch_file_name(cfg.saving.output_name, epoch)
            pos.last_lora = self.paused(self.outputs.save_lora, path, pos.global_step, epoch)
            if cfg.saving.save_state:
                self.paused(self.outputs.save_state, pos)
            if cfg.saving.save_last_n_epochs:
                checkpoint.prune_epoch_files(self.output_dir, cfg.saving.output_name, cfg.saving.save_last_n_epochs)
        every = cfg.sampling.sample_every_n_epochs
        if every and epoch % every == 0:
            self.paused(self.outputs.make_samples, pos.global_step, epoch)

    def validate(self, kind: str, epoch: int, due: bool = True) -> None:
        """Emit the validation loss ("step" or "epoch" cadence; `epoch` 1-based) when `due`; its
        time is not training time."""
        if not due:
            return
        result = self.paused(self.validator.evaluate)
        self.emit(Validation(time=time.time(), step=self.position.global_step, epoch=epoch, loss=result.loss,
                             kind=kind, batches=result.batches, seconds=result.seconds))

    def paused(self, action: Callable, *args):
        """Run a save or sample without counting its time as training time (s/step, ETA)."""
        begun = time.perf_counter()
        try:
            return action(*args)
        finally:
            self.meter.started += time.perf_counter() - begun

    def save_step_checkpoint(self, *, with_state: bool) -> None:
        """Save the LoRA for the current step (and the state when `with_state`), after a `log` that raises
        TrainingDiverged rather than save weights from an interval whose loss went NaN or infinite.
        """
        self.log()  # never save weights from an interval whose loss went NaN
        pos = self.position
        path = self.output_dir / checkpoint.step_file_name(self.cfg.saving.output_name, pos.global_step)
        pos.last_lora = self.paused(self.outputs.save_lora, path, pos.global_step, pos.current_epoch)
        if with_state:
            self.paused(self.outputs.save_state, pos)

    def stop(self) -> None:
        """A stop request: keep the LoRA and the state of this step, then end the loop."""
        self.save_step_checkpoint(with_state=True)
        self.position.stopped = True

    # ------------------------------------------------------------------ metrics (the sync point)

    def log(self) -> None:
        """Emit a Step for the steps since the last one (no-op when there are none); raises
        TrainingDiverged when any of their losses is NaN or infinite."""
        import torch

        pos, meter = self.position, self.meter
        if not meter.losses:
            return
        values = torch.stack(meter.losses).float()
        if self.accelerator.num_processes > 1:  # report the loss of the whole batch, every rank's part
            values = self.accelerator.reduce(values, reduction="mean")
        values = values.cpu()  # the one host<->device sync of the interval
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            first = int(bad[0])
            raise _diverged(pos.global_step - len(values) + first + 1, meter.paths[first], float(values[first]),
                            self.cfg, pos.last_lora)
        now = time.perf_counter()
        seconds_per_step = (now - meter.started) / len(values)
        loss = float(values.mean())
        meter.smoothed = loss if meter.smoothed is None else 0.9 * meter.smoothed + 0.1 * loss
        remaining = max(0, self.total_steps - pos.global_step)
        self.emit(Step(
            time=time.time(), step=pos.global_step, total_steps=self.total_steps, epoch=pos.epoch + 1,
            loss=loss, smoothed_loss=meter.smoothed, lr=group_lrs(self.optimizer),
            seconds_per_step=seconds_per_step,
            images_per_second=self.images_per_step / seconds_per_step if seconds_per_step > 0 else 0.0,
            eta_seconds=remaining * seconds_per_step, memory=snapshot(self.accelerator.device),
            **(self.hooks.metrics() if self.hooks is not None else {}),
        ))
        meter.losses.clear()
        meter.paths.clear()
        meter.started = now


def _diverged(step: int, paths: list[str], value: float, cfg: Any = None, last_lora: str = "") -> TrainingDiverged:
    from engine.train.divergence import divergence_hint

    names = ", ".join(Path(p).name for p in paths) or "(unknown batch)"
    kind = "NaN" if math.isnan(value) else "infinite"
    kept = f"the last good LoRA is kept: {last_lora}" if last_lora else "no LoRA had been saved before it"
    return TrainingDiverged(f"loss became {kind} at step {step} (batch: {names}); training stopped, {kept}",
                            hint=divergence_hint(cfg), step=step, last_good=last_lora)
