"""Each optimizer family and each lr_scheduler end to end on the tiny model: training runs, the
loss falls, the saved LoRA loads back, and (for the cases in RESUMED) a run resumed from the state
saved half-way equals the uninterrupted run bit for bit (losses, rates and tensors).

"The loss falls" is measured paired: every run has the same seed, so each step sees the same
batch, noise and timesteps; a reference run at a learning rate too small to change anything gives
the untrained loss of each of those steps, and a trained run must be below it after its first step.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from train_helpers import one_torch_thread, tiny_config, train  # noqa: F401  (one_torch_thread: autouse fixture)

from engine.events.types import RunStarted, Step

STEPS = 4
# (optimizer options, schedule options): every family once, every schedule once.
CASES = {
    "AdamW8bit-linear": ({"optimizer_type": "AdamW8bit"}, {"lr_scheduler": "linear", "lr_warmup_steps": 1}),
    "PagedAdamW32bit-cosine_with_min_lr": ({"optimizer_type": "PagedAdamW32bit"},
                                           {"lr_scheduler": "cosine_with_min_lr", "lr_scheduler_min_lr_ratio": 0.2}),
    "Lion8bit-cosine": ({"optimizer_type": "Lion8bit", "learning_rate": 1e-4}, {"lr_scheduler": "cosine"}),
    "SGDNesterov-cosine_with_restarts": ({"optimizer_type": "SGDNesterov", "learning_rate": 0.5},
                                         {"lr_scheduler": "cosine_with_restarts", "lr_scheduler_num_cycles": 2}),
    "DAdaptAdam-polynomial": ({"optimizer_type": "DAdaptAdam", "learning_rate": 1.0, "optimizer_args": ["d0=1e-2"]},
                              {"lr_scheduler": "polynomial", "lr_scheduler_power": 2.0}),
    "Prodigy-constant_with_warmup": ({"optimizer_type": "Prodigy", "learning_rate": 1.0,
                                      "optimizer_args": ["d0=1e-3"]},
                                     {"lr_scheduler": "constant_with_warmup", "lr_warmup_steps": 0.2}),
    "Adafactor-adafactor": ({"optimizer_type": "Adafactor"}, {"lr_scheduler": "adafactor"}),
    "AdEMAMix8bit-inverse_sqrt": ({"optimizer_type": "AdEMAMix8bit"},
                                  {"lr_scheduler": "inverse_sqrt", "lr_warmup_steps": 2}),
    "AdamWScheduleFree-constant": ({"optimizer_type": "AdamWScheduleFree", "learning_rate": 1e-2,
                                    "save_every_n_steps": 2}, {"lr_scheduler": "constant"}),
    "RAdam-path-StepLR": ({"optimizer_type": "torch.optim.RAdam", "learning_rate": 1e-2},
                          {"lr_scheduler_type": "StepLR", "lr_scheduler_args": ["step_size=2", "gamma=0.5"]}),
    "AdamW-warmup_stable_decay": ({"optimizer_type": "AdamW"},
                                  {"lr_scheduler": "warmup_stable_decay", "lr_warmup_steps": 1, "lr_decay_steps": 2}),
    "AdamW-piecewise_constant": ({"optimizer_type": "AdamW"},
                                 {"lr_scheduler": "piecewise_constant", "lr_scheduler_args": ["step_rules=1:3,0.5"]}),
}

# Resumed from the state saved half-way (bit-identical): one case per kind of optimizer state that a
# state folder must carry: bitsandbytes' 8-bit buffers with a warm-up schedule, D-Adaptation's d
# estimate, Prodigy's, schedule-free's averaged weights, Adafactor's factored moments with its own
# step size, and a torch class path with a torch scheduler. The other cases train and save only, to
# keep the suite's time (each resume is one more training).
RESUMED = ("AdamW8bit-linear", "DAdaptAdam-polynomial", "Prodigy-constant_with_warmup",
           "AdamWScheduleFree-constant", "Adafactor-adafactor", "RAdam-path-StepLR")


def _config(tmp_path, tiny_model, demo_dataset, options: dict):
    # UNet-only with cached text outputs: an optimizer family or a schedule is the same code for any parameter
    base = dict(max_train_steps=STEPS, learning_rate=1e-3, max_grad_norm=0.0, cache_latents=True,
                network_train_unet_only=True, cache_text_encoder_outputs=True)
    return tiny_config(tmp_path, tiny_model, demo_dataset, **{**base, **options})


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, tiny_model, demo_dataset):
    """The loss of each step's batch with a LoRA that does not move (the paired baseline)."""
    cfg = _config(tmp_path_factory.mktemp("untrained"), tiny_model, demo_dataset,
                  {"optimizer_type": "SGD", "learning_rate": 1e-30})
    return train(cfg).losses


@pytest.mark.e2e
@pytest.mark.parametrize("case", list(CASES))
def test_family_and_schedule_train_lower_the_loss_save_a_loadable_lora_and_resume_exactly(
        tmp_path, tiny_model, demo_dataset, untrained, case):
    from diffusers import StableDiffusionXLPipeline

    optimizer_options, schedule_options = CASES[case]
    options = {**optimizer_options, **schedule_options}
    if case in RESUMED:  # the state half-way, as a stop there saves it (Trainer.save_step_checkpoint)
        options.update(save_every_n_steps=STEPS // 2, save_state=True)
    whole = train(_config(tmp_path / "whole", tiny_model, demo_dataset, options))
    assert whole.result.ok, whole.result.error
    losses = whole.losses
    assert len(losses) == STEPS and losses[0] == untrained[0]  # same first batch, nothing learned yet
    gains = [u - t for u, t in zip(untrained[1:], losses[1:])]
    print(f"{case}: loss {sum(untrained[1:]) / (STEPS - 1):.5f} untrained -> {sum(losses[1:]) / (STEPS - 1):.5f}; lr "
          f"{[round(e.lr['unet'], 8) for e in whole.of(Step)]}")
    assert sum(gains) > 0 and gains[-1] > 0, f"{case}: the loss did not fall ({gains})"
    assert any(e.lr["unet"] > 0 for e in whole.of(Step))  # the rate the next step uses (0 at a schedule's end)

    lora = whole.lora()
    assert any(k.endswith("lora_up.weight") and v.abs().max() > 0 for k, v in lora.items())
    state_dict, alphas = StableDiffusionXLPipeline.lora_state_dict(whole.result.lora_path)
    assert state_dict and len(state_dict) >= len([k for k in lora if not k.endswith(".alpha")])

    if case not in RESUMED:
        return  # exactness of a resume is the optimizer state's and the schedule's, covered by RESUMED
    # the run again from its half-way state: the newest once the end's is gone (its LoRA is read above)
    out = Path(whole.result.output_dir)
    shutil.rmtree(out / "state" / f"step-{STEPS:08d}")
    resumed = train(_config(tmp_path / "whole", tiny_model, demo_dataset, options), resume=True)
    assert resumed.result.ok, resumed.result.error
    assert resumed.of(RunStarted)[0].resumed_from_step == STEPS // 2
    assert losses[:STEPS // 2] + resumed.losses == losses
    assert [e.lr for e in whole.of(Step)[:STEPS // 2] + resumed.of(Step)] == [e.lr for e in whole.of(Step)]
    again = resumed.lora()
    different = [k for k in lora if not torch.equal(lora[k], again[k])]
    assert not different, f"{case}: {len(different)} tensors differ after resume, e.g. {different[:2]}"
