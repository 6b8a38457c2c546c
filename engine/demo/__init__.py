"""TODO docstring for engine/demo."""
