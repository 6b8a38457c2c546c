"""TODO docstring for engine/control."""
