"""The base of every RunConfig section: frozen, no unknown keys, defaults validated too."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every RunConfig section: frozen, unknown keys refused, defaults validated too.

    Pydantic raises ValidationError for an unknown key (extra="forbid"), a value out of a field's bounds
    (defaults included: validate_default), and any assignment after construction (frozen).
    """
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
