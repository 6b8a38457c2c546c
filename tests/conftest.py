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
    # The suite runs one process per core (pytest -n): a tiny model's step is far slower
    # with a thread pool fighting the other worker, so subprocesses we start use one thread.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
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


@pytest.fixture(scope="module")
def frozen_tiny_sdxl(tiny_model):
    """engine.models.SdxlModel of the tiny model with every part frozen, loaded once per test
    module (modules may inject LoRA into it; the next module gets a fresh copy)."""
    from engine.config import RunConfig
    from engine.models import load_sdxl

    cfg = RunConfig().with_values(pretrained_model_name_or_path=str(tiny_model.diffusers_dir))
    loaded = load_sdxl(cfg.model)
    for part in (loaded.unet, loaded.vae, loaded.text_encoder1, loaded.text_encoder2):
        part.requires_grad_(False)
    return loaded
