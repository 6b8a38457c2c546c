"""Suggest the valid name a user probably meant."""
from __future__ import annotations

import difflib


def nearest(name: str, valid: list[str]) -> str:
    """A hint for a misspelt name: "did you mean '…'?" (difflib, cutoff 0.5), else where the valid names are listed."""
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'?" if match else "see `sdxl-tui options` for the valid names"
