"""The LoRA a real run writes carries sd-scripts' dataset metadata filled in, not empty."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from train_helpers import one_torch_thread, tiny_config, train  # noqa: E402,F401


@pytest.mark.e2e
def test_trained_lora_metadata_describes_the_dataset(tmp_path, tiny_model, demo_dataset):
    from engine.lora.file import load_lora

    recorded = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=1))
    assert recorded.result.ok, recorded.result.error
    _, metadata = load_lora(recorded.result.lora_path)
    datasets = json.loads(metadata["ss_datasets"])
    assert len(datasets) == 1
    subset = datasets[0]["subsets"][0]
    assert subset["img_count"] == demo_dataset.num_images
    assert subset["image_dir"] == demo_dataset.image_dir.name
    assert datasets[0]["num_train_images"] == demo_dataset.num_images * subset["num_repeats"]
    assert metadata["ss_num_train_images"] == str(datasets[0]["num_train_images"])
    dirs = json.loads(metadata["ss_dataset_dirs"])
    assert dirs[demo_dataset.image_dir.name]["img_count"] == demo_dataset.num_images
    assert json.loads(metadata["ss_tag_frequency"]) and json.loads(metadata["ss_bucket_info"])
