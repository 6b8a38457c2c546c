"""Shared pytest fixtures and session settings.

Session-scoped fixtures build their files once per test run; treat what they return as
read-only (copy a file or folder into `tmp_path` before changing it).
"""
from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Tests never reach the network: Hugging Face libraries read these at import time,
    # and conftest's hook runs before any test module imports them.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """engine.tiny_model.TinyModelPaths: the tiny SDXL as a diffusers folder
    (`.diffusers_dir`) and as one single-file checkpoint (`.single_file`), seed 0."""
    from engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """engine.demo_data.DemoDataset: 12 captioned shape images at resolution 64, with
    `.dataset_toml`, `.image_dir` and `.sample_prompts`."""
    from engine.demo_data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo_dataset"), resolution=64)
