"""The training run: `run` (set-up in order), the loop, loss, optimizers, LR schedules, the
fused backward pass, multi-process (DDP) and memory figures.
"""
