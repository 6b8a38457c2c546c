"""What a run will do before any model loads: steps and buckets (`make_plan`), the VRAM
estimate, and the advice after running out of GPU memory.
"""
