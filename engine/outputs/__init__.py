"""What a run writes while it trains: LoRA files, state folders (checkpoint) and resuming from
them, sample prompts and sample images, and `RunOutputs`, which the trainer saves through.
"""
