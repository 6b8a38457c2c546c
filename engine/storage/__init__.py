"""TODO docstring for engine/storage."""
