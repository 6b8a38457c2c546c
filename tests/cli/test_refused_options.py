"""Options and dataset keys sdxl-tui cannot honour yet stop `train` with exit 78, naming them,
before any model loads and before the output folder is claimed."""
from __future__ import annotations

import pytest
import tomlkit
from train_helpers import one_torch_thread, tiny_config  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.toml_file import save_config


def _dataset_with(tmp_path, demo_dataset, dataset_key: str = "", subset_key: str = ""):
    doc = tomlkit.parse(demo_dataset.dataset_toml.read_text(encoding="utf-8"))
    dataset = doc["datasets"][0]
    subset = dataset["subsets"][0]
    image_dir = subset["image_dir"]
    subset["image_dir"] = str((demo_dataset.dataset_toml.parent / str(image_dir)).resolve())
    if dataset_key:
        key, value = dataset_key.split("=", 1)
        dataset[key.strip()] = tomlkit.parse(f"v = {value}")["v"]
    if subset_key:
        key, value = subset_key.split("=", 1)
        subset[key.strip()] = tomlkit.parse(f"v = {value}")["v"]
    path = tmp_path / "dataset.toml"
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path


@pytest.mark.parametrize("options, dataset_key, subset_key, named", [
    (dict(masked_loss=True), "", "", "masked_loss"),
    (dict(weighted_captions=True, max_token_length=150), "", "", "weighted_captions"),
    ({}, "network_multiplier = 0.5", "", "network_multiplier"),
    ({}, "", "alpha_mask = true", "alpha_mask"),
    ({}, "", "face_crop_aug_range = [2.0, 4.0]", "face_crop_aug_range"),
    ({}, "", "custom_attributes = { diff_output_preservation = true }", "diff_output_preservation"),
    (dict(adaptive_noise_scale=0.1), "", "", "adaptive_noise_scale"),
    (dict(lr_warmup_steps=10), "", "", "lr_warmup_steps"),
])
def test_refused_before_the_model_loads(tmp_path, tiny_model, demo_dataset, capsys, no_model_load, options,
                                        dataset_key, subset_key, named):
    from sdxl_tui.cli import main

    dataset = _dataset_with(tmp_path, demo_dataset, dataset_key, subset_key)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, dataset_config=str(dataset), **options)
    code = main(["train", str(save_config(cfg, tmp_path / "run.toml"))])
    said = capsys.readouterr()
    assert code == 78
    assert named in said.out + said.err
    assert not no_model_load and not (tmp_path / "out").exists()
