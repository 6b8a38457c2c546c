"""TODO docstring for engine/plan."""
