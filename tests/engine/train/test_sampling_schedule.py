"""With both sample_every_n_epochs and sample_every_n_steps set, sd-scripts samples on the epoch
schedule only (its sample_images_common ignores the step schedule then)."""
from __future__ import annotations

import pytest
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import Sample

FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)


@pytest.mark.e2e
def test_epoch_schedule_wins_over_step_schedule(tmp_path, tiny_model, demo_dataset):
    run = train(tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=None, max_train_epochs=2,
                            gradient_accumulation_steps=12, sample_every_n_epochs=2, sample_every_n_steps=1,
                            sample_prompts=str(demo_dataset.sample_prompts), **FAST))
    assert run.result.ok, run.result.error
    # one step per epoch: the step schedule alone would sample at steps 1 and 2
    assert sorted({s.step for s in run.of(Sample)}) == [2]
