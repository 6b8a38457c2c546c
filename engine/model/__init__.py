"""TODO docstring for engine/model."""
