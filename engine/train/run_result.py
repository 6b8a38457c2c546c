"""What `engine.train.run.run` returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class RunResult:
    """How a run ended: `ok` (finished or stopped on request), the output folder, the newest LoRA
    written (empty when none), the optimizer steps done, and the error for a failed run."""

    ok: bool
    output_dir: str
    lora_path: str = ""
    step: int = 0
    stopped: bool = False
    error: Optional[BaseException] = None

    @property
    def exit_code(self) -> int:
        """0 when ok, else the error's exit code (README's table), 1 for an unexpected error."""
        if self.ok:
            return 0
        return getattr(self.error, "exit_code", 1)
