"""sd-scripts' optimizer_type values -> ours (names match in any case; see
engine/config/optimizer_names.py)."""
from __future__ import annotations

from typing import Any

from engine.config.optimizer_names import canonical_optimizer_name, unknown_name_message
from engine.errors import ConfigError


def import_optimizer_name(value: Any) -> tuple[str, str]:
    """(our optimizer_type, a note) for an args file's optimizer_type. An empty value is sd-scripts'
    default AdamW; a bare name sd-scripts does not know is looked up in torch.optim, as sd-scripts
    does, and written as its class path. Raises ConfigError for a name that is neither."""
    text = str(value or "").strip()
    if not text:
        return "AdamW", "empty: sd-scripts' default AdamW"
    name = canonical_optimizer_name(text)
    if name is not None:
        return name, "" if name == text else f"-> {name}"
    import torch.optim

    if text.isidentifier() and isinstance(getattr(torch.optim, text, None), type):
        return f"torch.optim.{text}", f"-> torch.optim.{text} (sd-scripts takes a bare name from torch.optim)"
    raise ConfigError(unknown_name_message(text), key="optimizer_type",
                      hint="fix optimizer_type in the sd-scripts args file")
