"""One module per CLI command: `add_arguments(parser)` and `run(args) -> int`.

Modules import nothing heavy at the top, so `sdxl-tui COMMAND --help` stays fast; `sdxl-tui --help`
imports none of them (sdxl_tui.cli lists them from its COMMANDS table).
"""
