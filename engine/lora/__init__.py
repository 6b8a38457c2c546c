"""TODO docstring for engine/lora."""
