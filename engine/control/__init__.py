"""What a running training is told: stop / save now / sample now (`RunControl`), the command
file another terminal writes, signal handling, and how far a save has got.
"""
