"""Whole tiny-model trainings with network_module = "lycoris.kohya", one per algo: the run
trains (the loss falls), the file has LyCORIS' tensors under sd-scripts' names and loads back as
network_weights carrying what was learned, and the LoHa run resumed from the state it saved half-way
ends bit-identical to its uninterrupted end.

"The loss falls" is measured paired: a second run loads the trained file as network_weights at a
rate too small to move it, with the same seed, so each of its steps sees the batch, noise,
timesteps and dropout of the trained run's step; the trained file must give the lower loss on
each of them (the trained run's loss at step k is that of its weights after k - 1 steps)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import RunStarted

pytest.importorskip("lycoris")

# the algos differ in the UNet's modules; the text encoders add time, not coverage
FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)
STEPS = 4  # the trained run's; the paired load-back run takes its first two

ALGOS = {
    "locon": (["algo=locon", "conv_dim=2", "conv_alpha=1", "rank_dropout=0.1", "module_dropout=0.1",
               "dropout=0.05"], "lora_down.weight"),
    "loha": (["algo=loha"], "hada_w1_a"),
    "lokr": (["algo=lokr", "factor=4", "decompose_both=true", "use_tucker=true", "use_scalar=true"], "lokr_w"),
    "ia3": (["algo=ia3"], "on_input"),
    "full": (["algo=full"], "diff"),
    "dora": (["algo=locon", "dora_wd=true", "train_norm=true"], "dora_scale"),
}


def _options(algo: str, **extra) -> dict:
    # full trains whole weight differences: at 1e-2 every weight moves by ~1e-2 a step and the loss rises
    lr = {"ia3": 1e-1, "full": 1e-3}.get(algo, 1e-2)
    return {**dict(max_train_steps=STEPS, learning_rate=lr, network_module="lycoris.kohya",
                   network_args=ALGOS[algo][0], **FAST), **extra}


_TRAINED: dict = {}  # algo -> (config, its finished run); the LoHa one is also the resume test's
# uninterrupted run: it saves its state half-way, as a stop there would (Trainer.save_step_checkpoint)
RESUMED_AT = dict(save_every_n_steps=STEPS // 2, save_state=True)


def _trained(algo, tmp_path_factory, tiny_model, demo_dataset):
    if algo not in _TRAINED:
        cfg = tiny_config(tmp_path_factory.mktemp(algo), tiny_model, demo_dataset,
                          **_options(algo, **(RESUMED_AT if algo == "loha" else {})))
        _TRAINED[algo] = cfg, train(cfg)
    cfg, run = _TRAINED[algo]
    assert run.result.ok, run.result.error
    return run


@pytest.mark.e2e
@pytest.mark.parametrize("algo", list(ALGOS))
def test_each_algo_trains_and_loads_back(algo, tmp_path, tmp_path_factory, tiny_model, demo_dataset):
    run = _trained(algo, tmp_path_factory, tiny_model, demo_dataset)
    tensors = run.lora()
    key = ALGOS[algo][1]
    assert any(("." + key) in k for k in tensors)
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    again = train(tiny_config(tmp_path, tiny_model, demo_dataset,
                              **_options(algo, max_train_steps=2, learning_rate=1e-30,
                                         network_weights=run.result.lora_path)))
    assert again.result.ok, again.result.error  # strict load: every key and shape matched
    gains = [before - after for before, after in zip(run.losses, again.losses)]
    print(f"{algo}: loss {run.losses[:2]} -> {again.losses} with the trained file")
    assert len(gains) == 2 and all(g > 0 for g in gains), f"{algo}: the trained file did not lower the loss ({gains})"


@pytest.mark.e2e
def test_lycoris_resume_is_bit_identical(tmp_path_factory, tiny_model, demo_dataset):
    whole = _trained("loha", tmp_path_factory, tiny_model, demo_dataset)
    cfg = _TRAINED["loha"][0]
    ended = whole.lora()
    # the run again from its half-way state: the newest once the end's is gone
    shutil.rmtree(Path(whole.result.output_dir) / "state" / f"step-{STEPS:08d}")
    resumed = train(cfg, resume=True)
    assert resumed.result.ok, resumed.result.error
    assert resumed.of(RunStarted)[0].resumed_from_step == STEPS // 2
    assert whole.losses[:STEPS // 2] + resumed.losses == whole.losses
    again = resumed.lora()
    assert again.keys() == ended.keys() and all(torch.equal(again[k], ended[k]) for k in ended)
