"""engine.train.model_setup: with cached text outputs and a UNet-only LoRA, the UNet loads after the
caches and the text encoders (and a cached-latent VAE) are let go first (issue 17: they never share
memory with the UNet); the LoRA is bit-identical to the one the load-everything order trains."""
from __future__ import annotations

import pytest
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.schema import RunConfig
from engine.train import network_setup
from engine.train import run as run_module
from engine.train.model_setup import unet_loads_after_caching

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def test_the_unet_loads_late_only_when_the_encoders_serve_only_the_cache():
    base = RunConfig().with_values(**FAST)
    assert unet_loads_after_caching(base)
    assert unet_loads_after_caching(base.with_values(cache_text_encoder_outputs=False,
                                                     cache_text_encoder_outputs_to_disk=True))
    assert unet_loads_after_caching(base.with_values(mixed_precision="bf16", fp8_base_unet=True))
    assert not unet_loads_after_caching(base.with_values(cache_text_encoder_outputs=False))
    assert not unet_loads_after_caching(base.with_values(network_train_unet_only=False,
                                                         cache_text_encoder_outputs=False))
    assert not unet_loads_after_caching(base.with_values(base_weights=["merged.safetensors"]))
    assert not unet_loads_after_caching(base.with_values(mixed_precision="bf16", fp8_base=True))


def _recording_build(monkeypatch) -> dict:
    seen: dict = {}
    build = network_setup.build_network

    def recording(session):  # what the model holds when the LoRA is built
        model = session.model
        seen["parts"] = {name: getattr(model, name) is not None
                         for name in ("unet", "vae", "text_encoder1", "text_encoder2")}
        return build(session)

    monkeypatch.setattr(network_setup, "build_network", recording)
    return seen


@pytest.mark.e2e
def test_late_unet_run_drops_the_encoders_and_trains_the_same_lora(tmp_path, tiny_model, demo_dataset,
                                                                    monkeypatch):
    seen = _recording_build(monkeypatch)
    late = train(tiny_config(tmp_path / "late", tiny_model, demo_dataset, max_train_steps=3, **FAST))
    assert late.result.ok, late.result.error
    assert seen["parts"] == {"unet": True, "vae": False, "text_encoder1": False, "text_encoder2": False}

    monkeypatch.setattr(run_module, "unet_loads_after_caching", lambda cfg: False)
    early = train(tiny_config(tmp_path / "early", tiny_model, demo_dataset, max_train_steps=3, **FAST))
    assert early.result.ok, early.result.error
    assert seen["parts"] == {"unet": True, "vae": True, "text_encoder1": True, "text_encoder2": True}
    ours, reference = late.lora(), early.lora()
    assert ours.keys() == reference.keys() and all((ours[k] == reference[k]).all() for k in ours)
    assert late.losses == early.losses


@pytest.mark.e2e
def test_late_unet_run_keeps_every_part_when_it_samples(tmp_path, tiny_model, demo_dataset, monkeypatch):
    seen = _recording_build(monkeypatch)
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1, sample_every_n_steps=1,
                            sample_prompts=str(demo_dataset.sample_prompts), **FAST))
    assert run.result.ok, run.result.error
    assert seen["parts"] == {"unet": True, "vae": True, "text_encoder1": True, "text_encoder2": True}
    assert list((tmp_path / "out" / "sample").glob("*.png"))
