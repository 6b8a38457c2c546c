"""`run(cfg, emit, control) -> RunResult`: the one door to training, for the wizard, the
headless CLI and tests.

Order: check the config (rules) -> claim the output folder (config.toml, events.jsonl) ->
load the model -> build the LoRA -> prepare the data (scan, cache) -> optimizer, schedule,
(the UNet and the LoRA after the caches when only the UNet trains on cached text outputs: see
engine/train/model_setup.py) ->
accelerate -> train (engine/train/loop.py) -> final save -> Finished.

Errors meant for a person (engine.errors) end the run with a Failed event and come back in
`RunResult.error`; anything else is a bug: it is reported as Failed too, then re-raised so
its traceback is not lost. Only the main process writes files and emits events.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from engine.config.schema import RunConfig
from engine.control.run_control import RunControl
from engine.errors import SdxlTuiError
from engine.events.types import SAVING, TRAINING, Finished, Phase, RunStarted, Warning_
from engine.outputs import checkpoint
from engine.outputs.writer import RunOutputs
from engine.train.model_setup import load_late_unet, load_model, unet_loads_after_caching
from engine.train.run_failure import failed_result, out_of_memory_error
from engine.train.run_result import RunResult
from engine.train.run_setup import (
    check_run_config,
    claim_output_dir,
    load_dataset_config,
    make_accelerator,
    prepare_resume_point,
    reusable_output_dir_notes,
)
from engine.versions import library_versions


@dataclass
class _Session:
    """What the pieces of one run share; built step by step in `run`."""

    cfg: RunConfig
    emit: Callable
    control: RunControl
    output_dir: Path
    started_at: float
    session_id: int
    accelerator: Any = None
    model: Any = None
    network: Any = None
    data: Any = None
    weight_dtype: Any = None
    trainer: Any = None
    sample_prompts: Optional[list] = None  # parsed once, before the model loads
    scanned: Any = None  # the dataset, scanned before the model loads (bad files fail fast)
    chatter: Any = None  # engine.events.library_logs.ChatterRedirect while the run holds the library loggers
    hooks: Any = None  # engine.train.step_hooks.StepHooks: max-norm and EMA after each step
    resumed: bool = False  # continues from a saved state (sdxl-tui resume, or the resume option)


def run(cfg: RunConfig, emit: Callable, control: Optional[RunControl] = None, *,
        resume: bool = False) -> RunResult:
    """Train the LoRA `cfg` describes; paths in `cfg` should be absolute
    (`engine.config.schema.resolve_relative_paths`). `resume=True` continues from the newest complete
    state in `output_dir` instead of refusing an existing run there."""
    control = control or RunControl()
    output_dir = Path(cfg.saving.output_dir).expanduser().resolve()
    session = _Session(cfg, emit, control, output_dir, time.time(), secrets.randbelow(2**31))
    log = None
    trackers = None
    stop_poller = None
    control.interruptible = True  # until the first step: a stop signal ends at once (signals.py)
    try:
        dataset_config = load_dataset_config(cfg)  # parsed once: the rules and the scan share it
        warnings = check_run_config(cfg, dataset_config)
        point = prepare_resume_point(output_dir, cfg, resume)
        resume = session.resumed = point is not None
        session.scanned = _scan_dataset(cfg, dataset_config)
        accelerator = session.accelerator = make_accelerator(cfg)
        if accelerator.is_main_process:
            warnings += reusable_output_dir_notes(output_dir) if not resume else []
            log = claim_output_dir(cfg, output_dir, resume)
            from engine.events.log import tee
            from engine.train.trackers import start_trackers

            trackers = start_trackers(cfg, output_dir)  # log_with: accelerate's TensorBoard / wandb trackers
            session.emit = tee(log, *([trackers] if trackers else []), emit)
            # `sdxl-tui watch` in another terminal: stop / save now / sample now via control.jsonl
            from engine.control.command_file import start_control_poller

            stop_poller = start_control_poller(output_dir, control)
        else:
            session.emit = lambda event: None
        for message in warnings:
            session.emit(Warning_(time=time.time(), message=message))
        from engine.events.library_logs import library_chatter_to_log

        with library_chatter_to_log(lambda event: session.emit(event)) as session.chatter:  # not over the panel
            return _train(session, point)
    except SdxlTuiError as exc:
        return failed_result(session, exc)
    except KeyboardInterrupt:  # a stop before the first step (StoppedBeforeTraining): nothing to save
        session.emit(Finished(time=time.time(), step=0, stopped=True))
        raise
    except Exception as exc:
        from engine.plan.oom_advice import is_out_of_memory

        if is_out_of_memory(exc):
            return failed_result(session, out_of_memory_error(session))
        failed_result(session, exc)
        raise
    finally:
        if stop_poller is not None:
            stop_poller()
        if log is not None:
            log.close()
        if trackers is not None:
            trackers.close()


def _attach_network(session: _Session, state) -> None:
    """The LoRA on the loaded model; a resumed state's weights loaded into it."""
    from engine.train.network_setup import build_network

    session.network = build_network(session)
    if state is not None:
        session.network.load_kohya_state_dict(state.lora)


def _prepare_data(session: _Session):
    from engine.data.training_data import prepare_training_data

    accelerator = session.accelerator
    return prepare_training_data(session.cfg, session.model, emit=session.emit, device=accelerator.device,
                                 dtype=session.weight_dtype, control=session.control,
                                 rank=accelerator.process_index, world_size=accelerator.num_processes,
                                 scanned=session.scanned)


def _scan_dataset(cfg: RunConfig, dataset_config):
    """Every image and caption checked (DataError naming the files) before a model loads."""
    from engine.data.dataset_config import load_run_dataset_config
    from engine.data.scan import scan_dataset

    config = dataset_config if dataset_config is not None else load_run_dataset_config(cfg)
    return scan_dataset(config, skip_bad_images=cfg.dataset.skip_bad_images, seed=cfg.training.seed)


# ---------------------------------------------------------------------- the run

def _train(session: _Session, point) -> RunResult:
    """Model -> LoRA -> data -> trainer -> final save; `point` is the state a resume starts from."""
    from accelerate.utils import set_seed

    set_seed(session.cfg.training.seed)
    state = _before_model(session, point)
    late_unet = unet_loads_after_caching(session.cfg)  # the UNet after the caches: less memory (model_setup.py)
    session.model = load_model(session, with_unet=not late_unet)
    if session.control.stop_requested:  # asked while a large model was loading: nothing to save yet
        return _finish(session, stopped=True, lora_path="", step=0)
    if not late_unet:
        _attach_network(session, state)
    session.data = _prepare_data(session)
    if late_unet and not session.data.interrupted:
        load_late_unet(session)
        _attach_network(session, state)
    if point is not None:
        from engine.outputs.resume import check_dataset_identity

        check_dataset_identity(point, session.data.manifest_hash)
    if session.control.stop_requested:
        return _finish(session, stopped=True, lora_path="", step=0)
    if session.data.batches_per_epoch == 0:  # the loop would turn epochs forever without a step
        from engine.errors import DataError

        raise DataError("the dataset gives no batch to train on",
                        hint="add images (or repeats), or use fewer processes than batches per epoch")
    trainer = _make_trainer(session, state)
    return _run_trainer(session, trainer, state)


def _before_model(session: _Session, point):
    """Sample prompts parsed (a bad file should not wait for the first sample) and the saved
    state read (resume), before the model loads; returns the state or None."""
    if session.cfg.sampling.sample_prompts:
        from engine.config.sample_prompts import parse_sample_prompts

        session.sample_prompts = parse_sample_prompts(session.cfg.sampling.sample_prompts)
    if point is None:
        return None
    from engine.outputs.resume import load_state

    for note in point.notes():
        session.emit(Warning_(time=time.time(), message=note))
    return load_state(point)


def _make_trainer(session: _Session, state):
    """Optimizer, schedule and position (restored from `state` on resume) in a Trainer; emits RunStarted."""
    from engine.data.batching import training_length
    from engine.train.ddp import training_unet
    from engine.train.loop import Trainer

    cfg, accelerator = session.cfg, session.accelerator
    accumulation = cfg.training.gradient_accumulation_steps
    length = training_length(session.data.batches_per_epoch, accumulation, cfg.training.max_train_steps,
                             cfg.training.max_train_epochs)
    total_steps, total_epochs = length.total_steps, length.epochs
    from engine.train.optimizer_setup import in_eval_mode, optimizer_and_schedule

    optimizer, scheduler, fused, params = optimizer_and_schedule(session, total_steps)
    eval_mode = in_eval_mode(optimizer, params)  # schedule-free: saves and samples see the averaged weights
    from engine.train.step_hooks import make_step_hooks

    session.hooks = make_step_hooks(session.network, cfg)  # max-norm and EMA after each step
    if state is not None and state.ema is not None and session.hooks is not None and session.hooks.ema is not None:
        session.hooks.ema.load_state_dict(state.ema)
    position = checkpoint.Position()
    if state is not None:
        (fused or optimizer).load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if state.scaler is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state.scaler)
        position = state.progress
    position, loop_steps = _initial_position(session, position, length.steps_per_epoch, total_steps, total_epochs)
    batch_size = _batch_size(session.data, cfg)
    trainer = session.trainer = Trainer(
        cfg=cfg, model=session.model, network=session.network, optimizer=optimizer, scheduler=scheduler,
        fused=fused, accelerator=accelerator, data=session.data, emit=session.emit, control=session.control,
        unet=training_unet(accelerator, session.model.unet, session.network,
                           compile_unet=cfg.precision.torch_compile),
        output_dir=session.output_dir, total_steps=loop_steps, total_epochs=total_epochs,
        trainable_params=params, train_text_encoders=not cfg.network.network_train_unet_only,
        outputs=_outputs(session, fused or optimizer, scheduler, total_steps, total_epochs, eval_mode),
        hooks=session.hooks,
        images_per_step=batch_size * accumulation * accelerator.num_processes, position=position)
    from engine.train.validation import make_validator

    trainer.validator = make_validator(cfg, session.data, session.network, session.model.noise_scheduler,
                                       trainer.batch_loss, accelerator.device, eval_mode)
    session.control.interruptible = False  # from here a stop finishes the step and saves
    session.emit(RunStarted(time=time.time(), output_dir=str(session.output_dir), total_steps=loop_steps,
                            total_epochs=total_epochs, steps_per_epoch=length.steps_per_epoch, batch_size=batch_size,
                            num_processes=accelerator.num_processes, resumed_from_step=position.global_step,
                            gradient_accumulation_steps=accumulation,
                            config_path=str(session.output_dir / "config.toml"), versions=library_versions()))
    return trainer


def _run_trainer(session: _Session, trainer, state) -> RunResult:
    """Train to the end (or a stop), then the final LoRA (and state, with save_state)."""
    cfg, emit, outputs, position = session.cfg, session.emit, trainer.outputs, trainer.position
    if cfg.sampling.sample_at_first and state is None:
        outputs.make_samples(0, None)
    emit(Phase(time=time.time(), name=TRAINING, total=trainer.total_steps))
    if state is not None:
        checkpoint.restore_rng(state.rng)  # the next draw is the one the interrupted run would have made
    try:
        trainer.train(skip_first_batches=position.batches_done_in_epoch)
    finally:
        if trainer.fused is not None:
            trainer.fused.remove()
    if position.stopped:
        return _finish(session, stopped=True, lora_path=position.last_lora, step=position.global_step)
    emit(Phase(time=time.time(), name=SAVING))
    final = session.output_dir / checkpoint.final_file_name(cfg.saving.output_name)
    if session.resumed:  # an earlier end's LoRA stays, under its step-numbered name
        from engine.outputs.retention import keep_previous_final

        keep_previous_final(session.output_dir, cfg.saving.output_name)
    position.last_lora = outputs.save_lora(final, position.global_step, position.current_epoch)
    if cfg.saving.save_state or cfg.saving.save_state_on_train_end:
        outputs.save_state(position)
    return _finish(session, stopped=False, lora_path=position.last_lora, step=position.global_step)


def _outputs(session: _Session, optimizer, scheduler, total_steps: int, total_epochs: int,
             eval_mode: Callable[[Callable], Callable]) -> RunOutputs:
    """What the trainer saves and samples through (the optimizer whose state a save keeps;
    `eval_mode` wraps LoRA saves and samples, see engine/train/optimizer_setup.in_eval_mode)."""
    return RunOutputs(cfg=session.cfg, emit=session.emit, control=session.control, output_dir=session.output_dir,
                      accelerator=session.accelerator, model=session.model, network=session.network,
                      data=session.data, weight_dtype=session.weight_dtype, optimizer=optimizer,
                      scheduler=scheduler, total_steps=total_steps, total_epochs=total_epochs,
                      started_at=session.started_at, session_id=session.session_id,
                      sample_prompts=session.sample_prompts, seen_weights=eval_mode,
                      ema=session.hooks.ema if session.hooks is not None else None)


def _initial_position(session: _Session, position, steps_per_epoch: int, total_steps: int, total_epochs: int):
    """(position, the step the loop stops at) with initial_epoch / initial_step applied."""
    from engine.outputs.checkpoint import Position
    from engine.train.initial_step import initial_start

    start = initial_start(session.cfg.training, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                          batches_per_epoch=session.data.batches_per_epoch, total_epochs=total_epochs)
    if start is None:
        return position, total_steps
    note = start.note + (" (the saved state's step is not used, as in sd-scripts)" if position.global_step else "")
    session.emit(Warning_(time=time.time(), message=note))
    return Position(global_step=start.global_step, epoch=start.epoch,
                    batches_done_in_epoch=start.batches_done_in_epoch), start.loop_steps


def _finish(session: _Session, *, stopped: bool, lora_path: str, step: int) -> RunResult:
    session.emit(Finished(time=time.time(), step=step, lora_path=lora_path, stopped=stopped,
                          seconds=time.time() - session.started_at))
    return RunResult(ok=True, output_dir=str(session.output_dir), lora_path=lora_path, step=step, stopped=stopped)


def _batch_size(data, cfg: RunConfig) -> int:
    """Images per batch (the first dataset's batch size; datasets may differ)."""
    return int(data.scanned.config.datasets[0].batch_size)
