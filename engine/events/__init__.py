"""TODO docstring for engine/events."""
