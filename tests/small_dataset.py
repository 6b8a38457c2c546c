"""A few of the demo images as a dataset of their own, for training tests whose assertion is about
epochs: with one image at batch size 1 an epoch is one step, so an epoch option shows in a few steps
instead of 12 batches each."""
from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace


def small_dataset(root: Path, demo_dataset, images: int = 1, batch_size: int = 1) -> SimpleNamespace:
    """The first `images` demo images (with captions) in root/images at resolution 64, num_repeats 1.
    Returns an object with `.dataset_toml`, `.image_dir` and `.sample_prompts` (the demo's), as tiny_config takes."""
    image_dir = Path(root) / "images"
    image_dir.mkdir(parents=True)
    for image in sorted(demo_dataset.image_dir.glob("*.png"))[:images]:
        shutil.copy(image, image_dir)
        shutil.copy(image.with_suffix(".txt"), image_dir)
    toml = Path(root) / "dataset.toml"
    toml.write_text('[general]\ncaption_extension = ".txt"\n\n'
                    f"[[datasets]]\nresolution = 64\nbatch_size = {batch_size}\n\n"
                    f"  [[datasets.subsets]]\n  image_dir = {str(image_dir)!r}\n  num_repeats = 1\n", encoding="utf-8")
    return SimpleNamespace(dataset_toml=toml, image_dir=image_dir, sample_prompts=demo_dataset.sample_prompts)
