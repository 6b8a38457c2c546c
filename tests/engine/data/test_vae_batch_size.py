"""vae_batch_size (issue 14): latent caching encodes that many images per VAE call, and the
latents do not depend on it (each image's noise comes from its own generator)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from train_helpers import one_torch_thread, scan_for  # noqa: E402,F401  (one_torch_thread: autouse)

from engine.config.schema import RunConfig  # noqa: E402
from engine.control.run_control import RunControl  # noqa: E402
from engine.data.training_data import prepare_training_data  # noqa: E402


def _cache(model, demo_dataset, vae_batch_size: int):
    calls = []
    handle = model.vae.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        cfg = RunConfig().with_values(dataset_config=str(demo_dataset.dataset_toml), vae_batch_size=vae_batch_size)
        data = prepare_training_data(cfg, model, emit=lambda e: None, device="cpu", dtype=torch.float32,
                                     control=RunControl(), scanned=scan_for(cfg))
    finally:
        handle.remove()
    latents = {}
    for batch in data.epoch_batches(0):
        for path, latent in zip(batch.paths, batch.latents):
            latents[str(path)] = latent.clone()
    return calls, latents


def test_vae_batch_size_sets_images_per_vae_call_and_not_the_latents(frozen_tiny_sdxl, demo_dataset):
    one_calls, one = _cache(frozen_tiny_sdxl, demo_dataset, 1)
    four_calls, four = _cache(frozen_tiny_sdxl, demo_dataset, 4)
    assert set(one_calls) == {1} and max(four_calls) > 1 and len(four_calls) < len(one_calls)
    assert sum(one_calls) == sum(four_calls)
    assert one.keys() == four.keys()
    assert all(torch.allclose(one[k], four[k], atol=1e-5) for k in one)
