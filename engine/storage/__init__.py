"""Writing files safely: atomic writes and free-disk-space checks.
"""
