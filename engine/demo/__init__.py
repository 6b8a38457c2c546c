"""The tiny SDXL-shaped model and the demo dataset, for tests and `sdxl-tui demo` only:
production code never imports this package.
"""
