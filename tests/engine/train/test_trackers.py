"""log_with through accelerate's trackers (issue 14): TensorBoard and the real wandb package in
offline mode get the loss scalars and the sample images; a missing tracker package is a
ConfigError naming the pip extra before anything loads (events.jsonl stays empty of a run)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.config.schema import RunConfig
from engine.errors import ConfigError
from engine.events.types import RunStarted
from engine.train import trackers

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


def test_missing_tracker_package_is_refused_naming_the_extra(monkeypatch, tmp_path, tiny_model, demo_dataset):
    monkeypatch.setitem(trackers.TRACKER_PACKAGES, "wandb", ("no_such_wandb_module", "wandb"))
    with pytest.raises(ConfigError) as caught:
        trackers.check_trackers(RunConfig().with_values(log_with="all").logging)
    assert 'sdxl-tui[wandb]' in caught.value.hint and caught.value.key == "log_with"
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, log_with="wandb"))
    assert run.result.exit_code == 78 and not run.of(RunStarted)
    assert not (Path(run.result.output_dir) / "events.jsonl").exists()


def test_tracker_names_and_init_kwargs(tmp_path):
    assert trackers.tracker_names("all") == ["tensorboard", "wandb"] and trackers.tracker_names("") == []
    logging = RunConfig().with_values(wandb_run_name="first").logging
    assert trackers.tracker_init_kwargs(logging) == {"wandb": {"name": "first"}}
    config = tmp_path / "trackers.toml"
    config.write_text('[wandb]\nentity = "me"\ntags = ["a"]\n')
    logging = RunConfig().with_values(wandb_run_name="first", log_tracker_config=str(config)).logging
    # replaces, as sd-scripts
    assert trackers.tracker_init_kwargs(logging) == {"wandb": {"entity": "me", "tags": ["a"]}}
    with pytest.raises(ConfigError, match="log_tracker_config"):
        trackers.check_trackers(RunConfig().with_values(log_tracker_config=str(tmp_path / "none.toml")).logging)


@pytest.mark.e2e
def test_wandb_offline_and_tensorboard_get_losses_and_samples(tmp_path, tiny_model, demo_dataset, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=2, log_with="all",
                            log_tracker_name="shapes", wandb_run_name="tiny-run", log_config=True,
                            sample_every_n_steps=2, sample_prompts=str(demo_dataset.sample_prompts), **FAST))
    assert run.result.ok, run.result.error
    logs = Path(run.result.output_dir) / "logs"
    # TensorBoard: logging_dir/<stamp>/<log_tracker_name>, as sd-scripts lays it out
    events = list(logs.glob("*/shapes/events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent), size_guidance={"images": 0})
    accumulator.Reload()
    assert [e.step for e in accumulator.Scalars("loss/current")] == [1, 2]
    assert any(tag.startswith("samples/prompt_00") for tag in accumulator.Tags()["images"])
    # wandb offline: one run folder; its run file holds the history (loss values as wandb
    # JSON-encodes them), the run name, project and config, and the sample images are files
    runs = list(logs.glob("*/wandb/offline-run-*"))
    assert len(runs) == 1
    raw = next(runs[0].glob("run-*.wandb")).read_bytes()
    for loss in run.losses:
        assert b"loss/current" in raw and json.dumps(loss).encode() in raw
    assert b"tiny-run" in raw and b"shapes" in raw and b"network_dim" in raw  # run name, project, log_config
    images = sorted(p.name for p in (runs[0] / "files" / "media" / "images" / "samples").glob("*.png"))
    assert images and images[0].startswith("prompt_00_2_")  # logged at step 2
