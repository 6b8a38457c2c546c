"""Whole tiny-model trainings with network_module = "lycoris.kohya", one per algo: the run
trains (loss falls), the file has LyCORIS' tensors under sd-scripts' names and loads back as
network_weights, and a stopped LoHa run resumes bit-identically."""
from __future__ import annotations

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.control.run_control import RunControl
from engine.events.types import Step

pytest.importorskip("lycoris")

# the algos differ in the UNet's modules; the text encoders add time, not coverage
FAST = dict(network_train_unet_only=True, cache_text_encoder_outputs=True)

ALGOS = {
    "locon": (["algo=locon", "conv_dim=2", "conv_alpha=1", "rank_dropout=0.1", "module_dropout=0.1",
               "dropout=0.05"], "lora_down.weight"),
    "loha": (["algo=loha"], "hada_w1_a"),
    "lokr": (["algo=lokr", "factor=4", "decompose_both=true", "use_tucker=true", "use_scalar=true"], "lokr_w"),
    "ia3": (["algo=ia3"], "on_input"),
    "full": (["algo=full"], "diff"),
    "dora": (["algo=locon", "dora_wd=true", "train_norm=true"], "dora_scale"),
}


@pytest.mark.e2e
@pytest.mark.parametrize("algo", list(ALGOS))
def test_each_algo_trains_and_loads_back(algo, tmp_path, tiny_model, demo_dataset):
    args, key = ALGOS[algo]
    # full trains whole weight differences: at 1e-2 every weight moves by ~1e-2 a step and the loss rises
    lr = {"ia3": 1e-1, "full": 1e-3}.get(algo, 1e-2)
    cfg = tiny_config(tmp_path, tiny_model, demo_dataset, max_train_steps=16, learning_rate=lr,
                      network_module="lycoris.kohya", network_args=args, **FAST)
    run = train(cfg)
    assert run.result.ok, run.result.error
    losses = run.losses
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print(f"{algo}: loss {first:.4f} -> {last:.4f}")
    assert last < first
    tensors = run.lora()
    assert any(("." + key) in k for k in tensors)
    assert any(k.startswith("lora_unet_input_blocks_") for k in tensors)
    again = train(tiny_config(tmp_path / "again", tiny_model, demo_dataset, max_train_steps=1, learning_rate=lr,
                              network_module="lycoris.kohya", network_args=args,
                              network_weights=run.result.lora_path, **FAST))
    assert again.result.ok, again.result.error  # strict load: every key and shape matched


@pytest.mark.e2e
def test_lycoris_resume_is_bit_identical(tmp_path, tiny_model, demo_dataset):
    options = dict(max_train_steps=6, network_module="lycoris.kohya", network_args=["algo=loha"], **FAST)
    whole = train(tiny_config(tmp_path / "whole", tiny_model, demo_dataset, **options))
    cfg = tiny_config(tmp_path / "split", tiny_model, demo_dataset, **options)
    control = RunControl()

    def on_event(event):
        if isinstance(event, Step) and event.step == 3:
            control.request_stop("test")

    first = train(cfg, control, on_event=on_event)
    assert first.result.stopped and first.result.step == 3
    resumed = train(cfg, resume=True)
    assert resumed.result.ok, resumed.result.error
    assert first.losses + resumed.losses == whole.losses
    a, b = resumed.lora(), whole.lora()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
