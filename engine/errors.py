"""Exceptions the engine raises for a person to read.

Each carries an exit code so the CLI maps failures to distinct statuses without knowing
where they came from (codes follow sysexits where one fits).
"""
from __future__ import annotations


class SdxlTuiError(Exception):
    """Base: a message that names the thing and says what to do.

    `step`: the optimizer step the failure belongs to (None: not known here; the run fills in
    where its loop stood). `last_good`: the newest LoRA file that survived ("" when none is known).
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", step: int | None = None, last_good: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.step = step
        self.last_good = last_good

    def __str__(self) -> str:
        return f"{self.message}\n  → {self.hint}" if self.hint else self.message


class ConfigError(SdxlTuiError):
    """The run config (or a file it names) is wrong; found before any model loads."""

    exit_code = 78

    def __init__(self, message: str, *, hint: str = "", key: str = "", line: int | None = None,
                 path: str = "", step: int | None = None, last_good: str = "") -> None:
        where = ""
        if path:
            where = f"{path}"
            if line:
                where += f":{line}"
            where += ": "
        super().__init__(where + message, hint=hint, step=step, last_good=last_good)
        self.key = key
        self.line = line
        self.path = path


class DataError(SdxlTuiError):
    """The dataset cannot be used as configured (missing folder, unreadable image...)."""

    exit_code = 65


class ModelError(SdxlTuiError):
    """The base model cannot be loaded or is not SDXL."""

    exit_code = 66


class OutputError(SdxlTuiError):
    """The output directory cannot be written or would overwrite a run."""

    exit_code = 73


class DiskFullError(OutputError):
    """The disk filled while writing outputs (exit code 74)."""
    exit_code = 74


class TrainingDiverged(SdxlTuiError):
    """Loss became NaN or Inf."""

    exit_code = 70


class OutOfVideoMemory(SdxlTuiError):
    """The GPU ran out of memory; the message says which settings would fit
    (engine/plan/oom_advice.py writes it)."""

    exit_code = 75  # EX_TEMPFAIL: retry with other settings
