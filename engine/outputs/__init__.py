"""TODO docstring for engine/outputs."""
