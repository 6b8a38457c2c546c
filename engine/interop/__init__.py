"""TODO docstring for engine/interop."""
