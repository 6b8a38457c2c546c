"""sdxl-tui: a terminal wizard and live dashboard for SDXL LoRA training."""
__version__ = "0.1.0"
