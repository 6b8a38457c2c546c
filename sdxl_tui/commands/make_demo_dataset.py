"""`sdxl-tui make-demo-dataset DIR`: write the demo images, captions, dataset TOML and sample prompts."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui make-demo-dataset`: DIR, --resolution, --repeats."""
    parser.add_argument("dir", help="folder to write images/, dataset.toml and sample_prompts.txt into")
    parser.add_argument("--resolution", type=int, default=64, help="training resolution, a multiple of 32 (default 64)")
    parser.add_argument("--repeats", type=int, default=2, help="num_repeats for the image folder (default 2)")


def run(args: argparse.Namespace) -> int:
    """Write the demo images, captions, dataset TOML and prompts; returns 2 for a resolution that is not a positive
    multiple of 32, else 0."""
    from engine.demo.dataset import make_demo_dataset

    if args.resolution < 32 or args.resolution % 32:
        print("sdxl-tui make-demo-dataset: --resolution must be a positive multiple of 32")
        return 2
    demo = make_demo_dataset(args.dir, resolution=args.resolution, num_repeats=args.repeats)
    print(f"{demo.num_images} images with captions: {demo.image_dir}")
    print(f"dataset TOML:   {demo.dataset_toml}")
    print(f"sample prompts: {demo.sample_prompts}")
    return 0
