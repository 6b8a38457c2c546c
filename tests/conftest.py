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
    """engine.demo.tiny_model.TinyModelPaths: the tiny SDXL as a diffusers folder
    (`.diffusers_dir`) and as one single-file checkpoint (`.single_file`), seed 0."""
    from engine.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory):
    """engine.demo.dataset.DemoDataset: 12 captioned shape images at resolution 64, with
    `.dataset_toml`, `.image_dir` and `.sample_prompts`."""
    from engine.demo.dataset import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo_dataset"), resolution=64)


@pytest.fixture(scope="module")
def frozen_tiny_sdxl(tiny_model):
    """engine.model.load.SdxlModel of the tiny model with every part frozen, loaded once per test
    module (modules may inject LoRA into it; the next module gets a fresh copy)."""
    from engine.config.schema import RunConfig
    from engine.model.load import load_sdxl

    cfg = RunConfig().with_values(pretrained_model_name_or_path=str(tiny_model.diffusers_dir))
    loaded = load_sdxl(cfg.model)
    for part in (loaded.unet, loaded.vae, loaded.text_encoder1, loaded.text_encoder2):
        part.requires_grad_(False)
    return loaded


@pytest.fixture(autouse=True)
def _whole_trainings_are_marked_e2e(request, monkeypatch):
    """A test that runs the training loop in this process must carry the `e2e` mark, so that
    `pytest -m "not e2e"` stays the quick loop. (Trainings in a child process are marked by
    hand: tests/cli and the subprocess tests.)"""
    if request.node.get_closest_marker("e2e") is not None:
        yield
        return
    from engine.train.loop import Trainer

    ran = []
    original = Trainer.train

    def recording_train(self, *args, **kwargs):
        ran.append(True)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", recording_train)
    yield
    if ran and os.environ.get("SDXL_TUI_E2E_AUDIT"):
        with open(os.environ["SDXL_TUI_E2E_AUDIT"], "a") as log:
            log.write(request.node.nodeid + "\n")
    elif ran:
        pytest.fail(f"{request.node.nodeid} runs a whole training: mark it @pytest.mark.e2e", pytrace=False)


@pytest.fixture()
def no_model_load(monkeypatch):
    """Fail the test if anything loads a model (the checks must come first); the calls made."""
    import engine.model.load

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(engine.model.load, "load_sdxl", refuse)
    return calls
