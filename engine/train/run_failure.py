"""How a run ends when something fails (engine/train/run.py): the Failed event with the step and
the last good LoRA, what was trained saved first where that is safe, and the advice for CUDA out of
memory. `session` is run.py's _Session."""
from __future__ import annotations

import time

from engine.errors import SdxlTuiError
from engine.events.types import Failed
from engine.train.run_result import RunResult


def failed_result(session, exc: BaseException) -> RunResult:
    """Emit Failed for `exc` (a person's error or a bug); the step and last good LoRA come from
    the error when it knows them, else from where the loop stood. What was trained is saved first
    (`save_what_was_trained`)."""
    position = session.trainer.position if session.trainer is not None else None
    known = exc if isinstance(exc, SdxlTuiError) else SdxlTuiError(str(exc))
    step = known.step or (position.global_step if position else 0)
    hint = known.hint
    rescued, note = save_what_was_trained(session, exc)
    if note:
        hint = f"{note}; {hint}" if hint else note
    last_good = rescued or (position.last_lora if position else known.last_good)
    session.emit(Failed(time=time.time(), message=known.message or type(exc).__name__,
                        hint=hint, step=step, kind=type(exc).__name__, last_good=last_good))
    return RunResult(ok=False, output_dir=str(session.output_dir), lora_path=last_good, step=step, error=exc)


def save_what_was_trained(session, exc: BaseException) -> tuple[str, str]:
    """After the first optimizer step, an unexpected failure still saves the LoRA of the last
    completed step (and the state when save_state is on) before the run ends: (path, note for
    the person). Not after a NaN loss (the weights are suspect; the last good LoRA stands) nor
    an out-of-memory (engine/plan/oom_advice.py saves then), nor on a non-main process."""
    from engine.errors import OutOfVideoMemory, TrainingDiverged

    trainer = session.trainer
    if (trainer is None or trainer.position.global_step == 0 or isinstance(exc, (TrainingDiverged, OutOfVideoMemory))
            or session.accelerator is None or not session.accelerator.is_main_process):
        return "", ""
    step = trainer.position.global_step
    try:
        trainer.save_step_checkpoint(with_state=session.cfg.saving.save_state)
    except Exception as again:  # the message must still come out; say the save failed too
        return "", f"saving the LoRA of step {step} after the failure failed too ({type(again).__name__}: {again})"
    what = "the LoRA and the training state" if session.cfg.saving.save_state else "the LoRA"
    return trainer.position.last_lora, f"{what} of step {step} (the last completed step) were saved: " \
                                       f"{trainer.position.last_lora}"


def out_of_memory_error(session):
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
