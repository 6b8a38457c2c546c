"""The base model: where it comes from (folder, single file, Hub), loading it, SDXL's
configs and layout (diffusers <-> original key names), and text encoding.
"""
