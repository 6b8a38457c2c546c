"""What a run does before the model loads (engine/train/run.py): read and check the config and
its dataset config, find the state a resume continues from, claim the output folder (config.toml,
events.jsonl) and make the accelerator. Every refusal here comes before any model loads."""
from __future__ import annotations

from pathlib import Path

from engine.config.schema import RunConfig
from engine.errors import OutputError

EXISTING_RUN_MARKERS = ("config.toml", "events.jsonl")


def load_dataset_config(cfg: RunConfig):
    """The dataset TOML `cfg` names, parsed (ConfigError when it is wrong); None when none is named
    (the rules say so)."""
    if not cfg.dataset.dataset_config:
        return None
    from engine.data.dataset_config import load_run_dataset_config

    return load_run_dataset_config(cfg)


def check_run_config(cfg: RunConfig, dataset_config) -> list[str]:
    """The check `plan` and the wizard make too (engine/plan/checks.py: rules over the config and
    its parsed dataset config, sample prompts), the optimizer class, then the model's path and
    shape (engine/model/hub_offline.py); raises ConfigError / ModelError, returns warnings."""
    from engine.model.hub_offline import check_model_before_loading
    from engine.plan.checks import check_config
    from engine.train.optimizers import check_optimizer

    checked = check_config(cfg, None, dataset_config)
    check_optimizer(cfg.optimizer.optimizer_type)  # a class path that does not import stops here
    from engine.train.precision import check_precision_options
    from engine.train.trackers import check_trackers

    check_precision_options(cfg)
    check_trackers(cfg.logging)
    notes = check_model_before_loading(cfg.model.pretrained_model_name_or_path)
    from engine.model.prediction import prediction_notes

    return list(checked.warnings) + notes + prediction_notes(cfg.model)


def prepare_resume_point(output_dir: Path, cfg: RunConfig, resume: bool):
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


def reusable_output_dir_notes(output_dir: Path) -> list[str]:
    """An output folder whose only run failed before training began holds nothing to keep:
    it may be used again (said in a warning). Anything else is left to claim_output_dir."""
    from engine.outputs.resume import failed_before_training

    failure = failed_before_training(output_dir)
    if failure is None:
        return []
    for name in EXISTING_RUN_MARKERS:
        if (output_dir / name).exists():
            (output_dir / name).replace(output_dir / f"{name}.failed-attempt")
    return [f"{output_dir} held only an attempt that failed before training ({failure}); "
            f"its config.toml and events.jsonl were kept with the suffix .failed-attempt"]


def make_accelerator(cfg: RunConfig):
    """A fresh accelerate Accelerator for the run's mixed_precision (cpu=True when no accelerator is
    available, so multi-process CPU runs use gloo). Raises ConfigError for a DeepSpeed / FSDP launch
    (ddp.check_launch_environment).
    """
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


def claim_output_dir(cfg: RunConfig, output_dir: Path, resume: bool):
    """Make `output_dir`, write config.toml into it and open its events.jsonl (EventLog).

    Raises OutputError when it already holds a run and `resume` is false (the hint says how to go
    on), or when it cannot be written.
    """
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
