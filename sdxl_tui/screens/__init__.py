"""Wizard screens: the start screen, one module per step, and the run progress view."""
