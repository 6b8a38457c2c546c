"""Each noise / timestep / loss option (and max_token_length) changes the trained LoRA on the tiny model, and setting
every one of them to its sd-scripts default leaves the LoRA bit-identical."""
from __future__ import annotations

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True, max_train_steps=2)

DEFAULTS = dict(noise_offset=0.0, noise_offset_random_strength=False, adaptive_noise_scale=None,
                multires_noise_iterations=0, multires_noise_discount=0.3, ip_noise_gamma=None,
                ip_noise_gamma_random_strength=False, min_timestep=None, max_timestep=None, loss_type="l2",
                huber_c=0.1, huber_scale=1.0, huber_schedule="snr", debiased_estimation_loss=False,
                scale_v_pred_loss_like_noise_pred=False, v_pred_like_loss=None, v_parameterization=False,
                zero_terminal_snr=False, max_token_length=None)

CHANGES = {
    "noise_offset_random_strength": dict(noise_offset=0.1, noise_offset_random_strength=True),
    "adaptive_noise_scale": dict(noise_offset=0.1, adaptive_noise_scale=0.5),
    "multires_noise_iterations": dict(multires_noise_iterations=4),
    "multires_noise_discount": dict(multires_noise_iterations=4, multires_noise_discount=0.8),
    "ip_noise_gamma": dict(ip_noise_gamma=0.5),
    "ip_noise_gamma_random_strength": dict(ip_noise_gamma=0.5, ip_noise_gamma_random_strength=True),
    "min_timestep": dict(min_timestep=900),
    "max_timestep": dict(max_timestep=50),
    "loss_type_l1": dict(loss_type="l1"),
    "loss_type_huber": dict(loss_type="huber"),
    "loss_type_smooth_l1": dict(loss_type="smooth_l1"),
    "huber_c": dict(loss_type="huber", huber_c=0.5),
    "huber_scale": dict(loss_type="huber", huber_schedule="constant", huber_scale=3.0),
    "huber_schedule": dict(loss_type="huber", huber_schedule="exponential"),
    "debiased_estimation_loss": dict(debiased_estimation_loss=True),
    "v_pred_like_loss": dict(v_pred_like_loss=0.5),
    "v_parameterization": dict(v_parameterization=True),
    "scale_v_pred_loss_like_noise_pred": dict(v_parameterization=True, scale_v_pred_loss_like_noise_pred=True),
    "zero_terminal_snr": dict(v_parameterization=True, zero_terminal_snr=True, min_timestep=990),
    "max_token_length": dict(max_token_length=225),  # cached text outputs of 227 states
}
# Compared with a run that differs only by the option named (not the plain default run).
BASELINES = {
    "noise_offset_random_strength": dict(noise_offset=0.1),
    "adaptive_noise_scale": dict(noise_offset=0.1),
    "multires_noise_discount": dict(multires_noise_iterations=4),
    "ip_noise_gamma_random_strength": dict(ip_noise_gamma=0.5),
    "huber_c": dict(loss_type="huber"),
    "huber_scale": dict(loss_type="huber", huber_schedule="constant"),
    "huber_schedule": dict(loss_type="huber"),
    "scale_v_pred_loss_like_noise_pred": dict(v_parameterization=True),
    "zero_terminal_snr": dict(v_parameterization=True, min_timestep=990),
}


_RUNS: dict = {}  # runs shared by the tests that compare against them, by their options


def _cached_lora(tmp_path_factory, tiny_model, demo_dataset, **values) -> dict:
    key = tuple(sorted(values.items()))
    if key not in _RUNS:
        _RUNS[key] = _lora(tmp_path_factory.mktemp("base"), tiny_model, demo_dataset, **values)
    return _RUNS[key]


def _lora(tmp_path, tiny_model, demo_dataset, **values) -> dict:
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, **FAST, **values))
    assert run.result.ok, run.result.error
    return run.lora()


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.e2e
def test_every_option_at_its_default_leaves_the_lora_bit_identical(tmp_path, tmp_path_factory, tiny_model,
                                                                   demo_dataset):
    plain = _cached_lora(tmp_path_factory, tiny_model, demo_dataset)
    explicit = _lora(tmp_path / "explicit", tiny_model, demo_dataset, **DEFAULTS)
    assert _same(plain, explicit)


@pytest.mark.e2e
@pytest.mark.parametrize("name", sorted(CHANGES))
def test_option_changes_the_lora(name, tmp_path, tmp_path_factory, tiny_model, demo_dataset):
    base = _cached_lora(tmp_path_factory, tiny_model, demo_dataset, **BASELINES.get(name, {}))
    # cached too: loss_type_huber, ip_noise_gamma, multires_noise_iterations and v_parameterization are
    # the baselines of other cases
    changed = _cached_lora(tmp_path_factory, tiny_model, demo_dataset, **CHANGES[name])
    assert not _same(base, changed), f"{name} did not change the LoRA"


@pytest.mark.e2e
def test_max_token_length_trains_the_text_encoders_through_every_window(tmp_path, tiny_model, demo_dataset):
    both = dict(max_train_steps=2)
    short = train(tiny_config(tmp_path / "short", tiny_model, demo_dataset, **both))
    long = train(tiny_config(tmp_path / "long", tiny_model, demo_dataset, max_token_length=150, **both))
    assert short.result.ok and long.result.ok, long.result.error
    a, b = short.lora(), long.lora()
    te_keys = [k for k in a if k.startswith("lora_te") and k.endswith("lora_up.weight")]
    assert te_keys and any(not torch.equal(a[k], b[k]) for k in te_keys)


@pytest.mark.e2e
def test_weighted_captions_change_the_lora(tmp_path, tiny_model, demo_dataset):
    import shutil

    import tomlkit

    doc = tomlkit.parse(demo_dataset.dataset_toml.read_text(encoding="utf-8"))
    source = (demo_dataset.dataset_toml.parent / str(doc["datasets"][0]["subsets"][0]["image_dir"])).resolve()
    images = shutil.copytree(source, tmp_path / "images")
    for caption in images.glob("*.txt"):
        caption.write_text(f"({caption.read_text(encoding='utf-8').strip()}:1.8)", encoding="utf-8")
    doc["datasets"][0]["subsets"][0]["image_dir"] = str(images)
    dataset = tmp_path / "dataset.toml"
    dataset.write_text(tomlkit.dumps(doc), encoding="utf-8")
    plain = _lora(tmp_path / "plain", tiny_model, demo_dataset, dataset_config=str(dataset))
    weighted = _lora(tmp_path / "weighted", tiny_model, demo_dataset, dataset_config=str(dataset),
                     weighted_captions=True)
    assert not _same(plain, weighted)
