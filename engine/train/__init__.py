"""TODO docstring for engine/train."""
