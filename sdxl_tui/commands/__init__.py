"""One module per CLI command: `add_arguments(parser)` and `run(args) -> int`.

Modules import nothing heavy at the top, so `sdxl-tui --help` stays fast.
"""
