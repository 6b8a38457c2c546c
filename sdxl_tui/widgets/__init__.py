"""Widgets shared by the wizard and the dashboard."""
