"""`sdxl-tui make-tiny-model DIR`: build the tiny SDXL-shaped model (random weights) for tests and the demo."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui make-tiny-model`: DIR, --seed."""
    parser.add_argument("dir",
                        help="folder to write tiny-sdxl/ (diffusers) and tiny-sdxl.safetensors (single file) into")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random weights (default 0)")


def run(args: argparse.Namespace) -> int:
    """Build the tiny SDXL-shaped model (diffusers folder and single file) and print where; returns 0."""
    import time

    from engine.demo.tiny_model import build_tiny_model

    started = time.perf_counter()
    paths = build_tiny_model(args.dir, seed=args.seed)
    seconds = time.perf_counter() - started
    print(f"diffusers folder: {paths.diffusers_dir}")
    print(f"single file:      {paths.single_file} ({paths.single_file.stat().st_size / 1e6:.1f} MB)")
    print(f"built in {seconds:.1f} s (seed {args.seed}); random weights: it draws noise until trained")
    return 0
