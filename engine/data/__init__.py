"""TODO docstring for engine/data."""
