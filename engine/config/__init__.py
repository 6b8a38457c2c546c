"""TODO docstring for engine/config."""
