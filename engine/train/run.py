"""`run(cfg, emit, control) -> RunResult`: the one door to training, for the wizard, the
headless CLI and tests.

Order: check the config (rules) -> claim the output folder (config.toml, events.jsonl) ->
load the model -> build the LoRA -> prepare the data (scan, cache) -> optimizer, schedule,
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
from engine.errors import OutputError, SdxlTuiError
from engine.events.types import LOADING_MODEL, SAVING, TRAINING, Failed, Finished, Phase, RunStarted, Warning_
from engine.outputs import checkpoint
from engine.outputs import writer as outputs

EXISTING_RUN_MARKERS = ("config.toml", "events.jsonl")


@dataclass(frozen=True)
class RunResult:
    ok: bool
    output_dir: str
    lora_path: str = ""
    step: int = 0
    stopped: bool = False
    error: Optional[BaseException] = None

    @property
    def exit_code(self) -> int:
        if self.ok:
            return 0
        return getattr(self.error, "exit_code", 1)


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
    try:
        warnings = _check_config(cfg)
        point = _prepare_resume(output_dir, cfg, resume)
        resume = point is not None
        session.scanned = _scan_dataset(cfg)
        accelerator = session.accelerator = _make_accelerator(cfg)
        if accelerator.is_main_process:
            warnings += _reusable_output_dir_notes(output_dir) if not resume else []
            log = _claim_output_dir(cfg, output_dir, resume)
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
        return _train(session, point)
    except SdxlTuiError as exc:
        return _failed(session, exc)
    except Exception as exc:
        from engine.plan.oom_advice import is_out_of_memory

        if is_out_of_memory(exc):
            return _failed(session, _out_of_memory(session))
        _failed(session, exc)
        raise
    finally:
        if stop_poller is not None:
            stop_poller()
        if log is not None:
            log.close()
        if trackers is not None:
            trackers.close()


def _failed(session: _Session, exc: BaseException) -> RunResult:
    position = getattr(session.trainer, "position", None)
    step = getattr(exc, "step", None) or (position.global_step if position else 0)
    last_good = position.last_lora if position else getattr(exc, "last_good", "")
    session.emit(Failed(time=time.time(), message=getattr(exc, "message", str(exc)) or type(exc).__name__,
                        hint=getattr(exc, "hint", ""), step=step, kind=type(exc).__name__, last_good=last_good))
    return RunResult(ok=False, output_dir=str(session.output_dir), lora_path=last_good, step=step, error=exc)


# ---------------------------------------------------------------------- set-up

def _check_config(cfg: RunConfig) -> list[str]:
    """Rules over the config (and its dataset TOML); raises ConfigError, returns warnings."""
    from engine.config.rules import check_rules, raise_for_errors

    dataset_config = None
    if cfg.dataset.dataset_config:
        from engine.data.dataset_config import load_dataset_config

        dataset_config = load_dataset_config(cfg.dataset.dataset_config,
                                             default_batch_size=cfg.training.train_batch_size)
    issues = check_rules(cfg, dataset_config)
    raise_for_errors(issues)
    from engine.train.precision import check_precision_options

    check_precision_options(cfg)
    from engine.train.trackers import check_trackers

    check_trackers(cfg.logging)
    _check_model_cheaply(cfg)
    return [issue.message for issue in issues if issue.level == "warning"]


def _check_model_cheaply(cfg: RunConfig) -> None:
    """Path, file type (pickle refused), SDXL shape from the header, Hub cache when offline:
    a ModelError before the output folder is claimed or a model loads."""
    import os

    from engine.model.source import check_sdxl_shape, detect_model_source, hub_error

    source = detect_model_source(cfg.model.pretrained_model_name_or_path)
    shape = check_sdxl_shape(source)
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if source.kind == "hub" and shape is None and offline:
        raise hub_error(source.path, FileNotFoundError(source.path))


def _prepare_resume(output_dir: Path, cfg: RunConfig, resume: bool):
    """The state to continue from: the newest in output_dir (`sdxl-tui resume`), the folder the
    `resume` option names, or None for a fresh run."""
    if resume:
        from engine.outputs.resume import prepare_resume

        if cfg.saving.resume:
            from engine.errors import ConfigError

            raise ConfigError(f"resume = {cfg.saving.resume} names a state, but this run resumes from the newest "
                              f"state in {output_dir}", key="resume", hint="set resume = \"\" or run it as a new run")

        return prepare_resume(output_dir, cfg)
    if cfg.saving.resume:
        from engine.outputs.resume_option import prepare_resume_from

        return prepare_resume_from(Path(cfg.saving.resume), output_dir, cfg)
    return None


def _reusable_output_dir_notes(output_dir: Path) -> list[str]:
    """An output folder whose only run failed before training began holds nothing to keep:
    it may be used again (said in a warning). Anything else is left to _claim_output_dir."""
    from engine.outputs.resume import failed_before_training

    failure = failed_before_training(output_dir)
    if failure is None:
        return []
    for name in EXISTING_RUN_MARKERS:
        if (output_dir / name).exists():
            (output_dir / name).replace(output_dir / f"{name}.failed-attempt")
    return [f"{output_dir} held only an attempt that failed before training ({failure}); "
            f"its config.toml and events.jsonl were kept with the suffix .failed-attempt"]


def _make_accelerator(cfg: RunConfig):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    # accelerate keeps its settings in a process-wide singleton and refuses a second
    # Accelerator with other settings; one run owns the process's training state, so start
    # clean (the distributed part, PartialState, is kept).
    from engine.train.ddp import check_launch_environment

    check_launch_environment()
    AcceleratorState._reset_state(reset_partial_state=False)
    # Gradient accumulation is done by the loop (a short last group per epoch still makes a
    # step), so accelerate must not divide the loss itself.
    # Without a GPU, accelerate runs several processes (torchrun / accelerate launch) over gloo
    # only when told cpu=True; otherwise each process would train alone and all write files.
    import torch

    return Accelerator(mixed_precision=cfg.precision.mixed_precision, cpu=not torch.accelerator.is_available())


def _claim_output_dir(cfg: RunConfig, output_dir: Path, resume: bool):
    from engine.config.toml_file import save_config
    from engine.events.log import EventLog

    existing = [name for name in EXISTING_RUN_MARKERS if (output_dir / name).exists()]
    if existing and not resume:
        from engine.outputs.resume import existing_run_hint

        raise OutputError(f"{output_dir} already holds a run ({', '.join(existing)})",
                          hint=existing_run_hint(output_dir))
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, output_dir / "config.toml")
    except OSError as exc:
        raise OutputError(f"cannot write to {output_dir}: {exc.strerror or exc}",
                          hint="choose an output_dir you can write to") from None
    return EventLog(output_dir)  # TensorBoard goes through accelerate's tracker (engine/train/trackers.py)


def _weight_dtype(mixed_precision: str):
    import torch

    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


def _load_model(session: _Session):
    """The base model, frozen, on the device in the compute dtype (VAE fp32 with no_half_vae)."""
    import torch

    from engine.model.load import load_sdxl

    cfg, device = session.cfg, session.accelerator.device
    session.emit(Phase(time=time.time(), name=LOADING_MODEL, detail=cfg.model.pretrained_model_name_or_path))
    model = load_sdxl(cfg.model)
    dtype = session.weight_dtype = _weight_dtype(cfg.precision.mixed_precision)
    for part in (model.unet, model.text_encoder1, model.text_encoder2, model.vae):
        part.requires_grad_(False)
        part.eval()
    _place(model.unet, device, dtype)
    _place(model.text_encoder1, device, dtype)
    _place(model.text_encoder2, device, dtype)
    _place(model.vae, device, torch.float32 if cfg.precision.no_half_vae else dtype)
    return model


def _place(module, device, dtype) -> None:
    module.to(device)
    if module.dtype != dtype:  # diffusers warns about any dtype cast, so cast only when needed
        module.to(dtype)


def _build_network(session: _Session):
    """LoRA adapters (fp32) injected into the model; `network_weights` loaded when given."""
    import torch

    from engine.lora.network import create_network

    cfg, model = session.cfg, session.model
    net_cfg = cfg.network
    network = create_network(model.unet, model.text_encoder1, model.text_encoder2, dim=net_cfg.network_dim,
                             alpha=net_cfg.network_alpha, dropout=net_cfg.network_dropout,
                             conv_dim=net_cfg.conv_dim, conv_alpha=net_cfg.conv_alpha,
                             train_unet_only=net_cfg.network_train_unet_only)
    from engine.train.precision import fp8_parts, lora_dtype, store_weights_fp8

    network.to(session.accelerator.device, lora_dtype(cfg))  # fp32 unless full_fp16 / full_bf16
    network.apply()
    for part in fp8_parts(cfg):  # fp8_base / fp8_base_unet: frozen weights stored in 8 bits
        store_weights_fp8(getattr(model, part), session.weight_dtype)
    if net_cfg.network_weights:
        from engine.lora.file import load_lora

        tensors, _ = load_lora(net_cfg.network_weights)
        network.load_kohya_state_dict(tensors)
    network.train()
    if cfg.precision.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()
    model.unet.train()  # diffusers checkpoints activations only in training mode
    trains_text = not net_cfg.network_train_unet_only
    for encoder in (model.text_encoder1, model.text_encoder2):
        if trains_text:
            encoder.train()
            if cfg.precision.gradient_checkpointing:
                encoder.gradient_checkpointing_enable()
    return network


def _prepare_data(session: _Session):
    from engine.data.training_data import prepare_training_data

    accelerator = session.accelerator
    return prepare_training_data(session.cfg, session.model, emit=session.emit, device=accelerator.device,
                                 dtype=session.weight_dtype, control=session.control,
                                 rank=accelerator.process_index, world_size=accelerator.num_processes,
                                 scanned=session.scanned)


def _scan_dataset(cfg: RunConfig):
    """Every image and caption checked (DataError naming the files) before a model loads."""
    from engine.data.dataset_config import load_dataset_config, resolve_dataset_config_path
    from engine.data.scan import scan_dataset

    config = load_dataset_config(resolve_dataset_config_path(cfg, None),
                                 default_batch_size=cfg.training.train_batch_size)
    return scan_dataset(config, skip_bad_images=cfg.dataset.skip_bad_images)


def _out_of_memory(session: _Session):
    """CUDA ran out of memory: save the state when training had begun (what the last step
    made is intact: the failed step never reached the optimizer), then say what would fit."""
    from types import SimpleNamespace

    from engine.plan.oom_advice import device_memory_gb, oom_error

    trainer, saved = session.trainer, ""
    step = trainer.position.global_step if trainer is not None else 0
    if trainer is not None and step > 0 and session.accelerator.is_main_process:
        try:
            import torch

            if trainer.fused is None:
                trainer.optimizer.zero_grad(set_to_none=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            trainer.save_step_checkpoint(with_state=True)
            saved = trainer.position.last_lora
        except Exception:  # saving is a courtesy here; the message matters more
            saved = ""
    plan = None
    if session.scanned is not None:
        datasets = session.scanned.config.datasets
        plan = SimpleNamespace(buckets=[SimpleNamespace(bucket=bucket, batch_size=datasets[index].batch_size)
                                        for index, bucket in session.scanned.bucket_histogram()])
    device = session.accelerator.device if session.accelerator is not None else None
    return oom_error(session.cfg, plan, device_memory_gb(device), step=step, state_saved=saved)


def _optimizer_and_schedule(session: _Session, total_steps: int):
    from engine.train.fused_backward import FusedBackward
    from engine.train.optimizers import build_optimizer, parse_optimizer_args, uses_own_lr
    from engine.train.schedulers import OptimizerOwnSchedule, build_scheduler_for

    cfg = session.cfg
    opt = cfg.optimizer
    groups = session.network.param_groups(opt.resolved_unet_lr, opt.resolved_text_encoder_lr1,
                                          opt.resolved_text_encoder_lr2)
    args = parse_optimizer_args(opt.optimizer_args)
    optimizer = build_optimizer(opt.optimizer_type, groups, args)
    if uses_own_lr(opt.optimizer_type, args):
        scheduler = OptimizerOwnSchedule()
    else:
        scheduler = build_scheduler_for(optimizer, opt, total_steps)
    fused = None
    if cfg.precision.fused_backward_pass:
        if session.accelerator.scaler is not None:
            from engine.errors import ConfigError

            raise ConfigError("fused_backward_pass cannot be used with the fp16 gradient scaler",
                              key="precision.fused_backward_pass", hint="use mixed_precision = \"bf16\"")
        if session.accelerator.num_processes > 1:
            from engine.errors import ConfigError

            # DDP averages a gradient only after the hook would already have stepped with it.
            raise ConfigError("fused_backward_pass works in one process only (DDP averages gradients across "
                              "processes after the fused step would have used them)",
                              key="precision.fused_backward_pass", hint="set fused_backward_pass = false")
        fused = FusedBackward(optimizer, max_grad_norm=opt.max_grad_norm)
    else:
        optimizer = session.accelerator.prepare(optimizer)
    if cfg.precision.full_fp16:
        from engine.train.precision import allow_fp16_gradients

        allow_fp16_gradients(session.accelerator.scaler)
    params = [p for group in groups for p in group["params"]]
    return optimizer, scheduler, fused, params


# ---------------------------------------------------------------------- the run

def _train(session: _Session, point) -> RunResult:
    from accelerate.utils import set_seed

    from engine.data.batching import training_length
    from engine.train.ddp import training_unet
    from engine.train.loop import Position, Trainer

    cfg, emit = session.cfg, session.emit
    set_seed(cfg.training.seed)
    if cfg.sampling.sample_prompts:  # a bad prompts file should not wait for the first sample
        from engine.outputs.sample_prompts import parse_sample_prompts

        session.sample_prompts = parse_sample_prompts(cfg.sampling.sample_prompts)
    state = None
    if point is not None:
        from engine.outputs.resume import load_state

        for note in point.notes():
            emit(Warning_(time=time.time(), message=note))
        state = load_state(point)
    session.model = _load_model(session)
    if session.control.stop_requested:  # asked while a large model was loading: nothing to save yet
        return _finish(session, stopped=True, lora_path="", step=0)
    session.network = _build_network(session)
    if state is not None:
        session.network.load_kohya_state_dict(state.lora)
    session.data = _prepare_data(session)
    if point is not None:
        from engine.outputs.resume import check_dataset_identity

        check_dataset_identity(point, session.data.manifest_hash)
    if session.control.stop_requested:
        return _finish(session, stopped=True, lora_path="", step=0)
    if session.data.batches_per_epoch == 0:  # the loop would turn epochs forever without a step
        from engine.errors import DataError

        raise DataError("the dataset gives no batch to train on",
                        hint="add images (or repeats), or use fewer processes than batches per epoch")
    accumulation = cfg.training.gradient_accumulation_steps
    steps_per_epoch = -(-session.data.batches_per_epoch // accumulation)
    total_steps, total_epochs, _ = training_length(steps_per_epoch, cfg.training.max_train_steps,
                                                   cfg.training.max_train_epochs)
    optimizer, scheduler, fused, params = _optimizer_and_schedule(session, total_steps)
    position = Position()
    if state is not None:
        (fused or optimizer).load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        if state.scaler is not None and session.accelerator.scaler is not None:
            session.accelerator.scaler.load_state_dict(state.scaler)
        position = Position(global_step=state.progress.global_step, epoch=state.progress.epoch,
                            batches_done_in_epoch=state.progress.batches_done_in_epoch)
    position, loop_steps = _initial_position(session, position, steps_per_epoch, total_steps, total_epochs)
    images_per_step = _batch_size(session.data, cfg) * accumulation * session.accelerator.num_processes
    trainer = session.trainer = Trainer(
        cfg=cfg, model=session.model, network=session.network, optimizer=optimizer, scheduler=scheduler,
        fused=fused, accelerator=session.accelerator, data=session.data, emit=emit, control=session.control,
        unet=training_unet(session.accelerator, session.model.unet, session.network,
                           compile_unet=cfg.precision.torch_compile),
        output_dir=session.output_dir, total_steps=loop_steps, total_epochs=total_epochs,
        trainable_params=params, train_text_encoders=not cfg.network.network_train_unet_only,
        save_lora=lambda path, step, epoch: outputs.save_lora(session, path, step, epoch, total_steps, total_epochs),
        save_state=lambda progress: outputs.save_state(session, fused or optimizer, scheduler, progress),
        make_samples=lambda step, epoch: outputs.make_samples(session, step, epoch),
        images_per_step=images_per_step, position=position)
    emit(RunStarted(time=time.time(), output_dir=str(session.output_dir), total_steps=loop_steps,
                    total_epochs=total_epochs, steps_per_epoch=steps_per_epoch, batch_size=_batch_size(session.data, cfg),
                    num_processes=session.accelerator.num_processes, resumed_from_step=position.global_step,
                    gradient_accumulation_steps=accumulation,
                    config_path=str(session.output_dir / "config.toml")))
    if cfg.sampling.sample_at_first and state is None:
        outputs.make_samples(session, 0, None)
    emit(Phase(time=time.time(), name=TRAINING, total=loop_steps))
    if state is not None:
        checkpoint.restore_rng(state.rng)  # the next draw is the one the interrupted run would have made
    try:
        trainer.train(skip_first_batches=position.batches_done_in_epoch)
    finally:
        if fused is not None:
            fused.remove()
    if position.stopped:
        return _finish(session, stopped=True, lora_path=position.last_lora, step=position.global_step)
    emit(Phase(time=time.time(), name=SAVING))
    final = session.output_dir / checkpoint.final_file_name(cfg.saving.output_name)
    if point is not None:  # an earlier end's LoRA stays, under its step-numbered name
        from engine.outputs.retention import keep_previous_final

        keep_previous_final(session.output_dir, cfg.saving.output_name)
    position.last_lora = outputs.save_lora(session, final, position.global_step, position.current_epoch, total_steps,
                                   total_epochs)
    if cfg.saving.save_state or cfg.saving.save_state_on_train_end:
        outputs.save_state(session, fused or optimizer, scheduler, trainer.progress())
    return _finish(session, stopped=False, lora_path=position.last_lora, step=position.global_step)


def _initial_position(session: _Session, position, steps_per_epoch: int, total_steps: int, total_epochs: int):
    """(position, the step the loop stops at) with initial_epoch / initial_step applied."""
    from engine.train.initial_step import initial_start
    from engine.train.loop import Position

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
