"""Wizard screens: the start screen and one module per step (the dashboard is its own)."""

STEP_TITLES = ("Model", "Dataset", "Network", "Learning", "Memory & speed", "Samples & saving", "Review")
