"""Wizard screens: the start screen, one module per step, and the run progress view."""

STEP_TITLES = ("Model", "Dataset", "Network", "Learning", "Memory & speed", "Samples & saving", "Review")
