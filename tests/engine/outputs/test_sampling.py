"""Sample prompt files in sd-scripts' forms, and sample images from the live tiny SDXL that
never disturb the training they interrupt."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from train_helpers import one_torch_thread  # noqa: F401  (autouse: one thread is faster for the tiny model here)

from engine.config.sample_prompts import SamplePrompt, parse_sample_prompts
from engine.errors import ConfigError

# ---- prompt files -----------------------------------------------------------------------------


def test_text_prompts_with_options_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text(
        "# a comment line\n"
        "\n"
        "a red circle, best quality --n blurry, lowres --w 1024 --h 768 --s 20 --l 6.5 --d 42\n"
        "a blue square\n"
        "  # indented comment\n"
        "a green triangle --d 7 --ss ddim --x unknown\n")
    prompts = parse_sample_prompts(path)
    assert prompts[0] == SamplePrompt("a red circle, best quality", negative_prompt="blurry, lowres", width=1024,
                                      height=768, sample_steps=20, scale=6.5, seed=42, index=0)
    assert prompts[1] == SamplePrompt("a blue square", index=1)  # sd-scripts' defaults
    assert (prompts[1].width, prompts[1].sample_steps, prompts[1].scale, prompts[1].seed) == (512, 30, 7.5, None)
    assert prompts[2].seed == 7 and prompts[2].sample_sampler == "ddim" and prompts[2].index == 2


def test_toml_prompts_merge_defaults_into_each_subset(tmp_path):
    path = tmp_path / "prompts.toml"
    path.write_text(
        "[prompt]\nwidth = 768\nheight = 768\nsample_steps = 12\nnegative_prompt = \"ugly\"\n"
        "\n[[prompt.subset]]\nprompt = \"first\"\nseed = 1\n"
        "\n[[prompt.subset]]\nprompt = \"second\"\nwidth = 1024\nscale = 4\n")
    first, second = parse_sample_prompts(path)
    assert (first.prompt, first.width, first.seed, first.negative_prompt, first.sample_steps) == (
        "first", 768, 1, "ugly", 12)
    assert (second.prompt, second.width, second.height, second.scale) == ("second", 1024, 768, 4.0)


def test_json_prompts_accept_dicts_and_lines(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"prompt": "dict one", "seed": 3, "width": 640}, "line two --h 320"]))
    one, two = parse_sample_prompts(path)
    assert (one.prompt, one.seed, one.width) == ("dict one", 3, 640)
    assert (two.prompt, two.height, two.index) == ("line two", 320, 1)


def test_bad_prompt_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError):
        parse_sample_prompts(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("a cat --w wide\n")
    with pytest.raises(ConfigError):
        parse_sample_prompts(bad)
    toml = tmp_path / "bad.toml"
    toml.write_text("[prompt]\nwidth = 3\n")
    with pytest.raises(ConfigError):
        parse_sample_prompts(toml)


def test_sizes_round_down_to_what_the_unet_takes():
    assert SamplePrompt("x", width=1000, height=20).rounded_size == (992, 32)


# ---- generating -------------------------------------------------------------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model(frozen_tiny_sdxl):
    return frozen_tiny_sdxl


def generate(model, prompts, out_dir, *, step=10, epoch=None, sampler="euler_a", dtype=None):
    from engine.outputs.sampling import generate_samples

    return generate_samples(model, prompts, out_dir=out_dir, output_name="mylora", step=step, epoch=epoch,
                            sampler=sampler, device="cpu", dtype=dtype)


def pixels(path):
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype("int16")


PROMPT = SamplePrompt("a red circle on a white background", negative_prompt="blue", width=32, height=64,
                      sample_steps=2, scale=5.0, seed=11, index=0)


def test_files_named_like_sd_scripts_with_settings_inside(model, tmp_path):
    from PIL import Image

    unseeded = SamplePrompt("a blue square", width=32, height=32, sample_steps=1, scale=1.0, index=1)
    written = generate(model, [PROMPT, unseeded], tmp_path)
    (first, text1), (second, text2) = written
    assert first.parent == tmp_path / "sample" and text1 == PROMPT.prompt and text2 == "a blue square"
    assert re.fullmatch(r"mylora_000010_00_\d{14}_11\.png", first.name)
    assert re.fullmatch(r"mylora_000010_01_\d{14}\.png", second.name)
    with Image.open(first) as im:
        assert im.size == (32, 64)
        assert "Negative prompt: blue" in im.text["parameters"] and "Seed: 11" in im.text["parameters"]
    by_epoch = generate(model, [PROMPT], tmp_path, epoch=3)
    assert re.fullmatch(r"mylora_e000003_00_\d{14}_11\.png", by_epoch[0][0].name)


def test_seed_fixes_the_image(model, tmp_path):
    a = generate(model, [PROMPT], tmp_path / "a")[0][0]
    b = generate(model, [PROMPT], tmp_path / "b")[0][0]
    c = generate(model, [SamplePrompt(**{**PROMPT.__dict__, "seed": 12})], tmp_path / "c")[0][0]
    assert (pixels(a) == pixels(b)).all()
    assert (pixels(a) != pixels(c)).any()


@pytest.mark.parametrize("sampler", ["ddim", "euler", "euler_a", "dpmsolver++", "k_dpm_2", "pndm", "lms", "heun",
                                     "dpm_2_a"])
def test_every_sampler_generates(model, tmp_path, sampler):
    from engine.outputs.sampling import SAMPLERS, make_sampler_scheduler

    try:
        scheduler = make_sampler_scheduler(sampler, model.noise_scheduler.config)
    except ConfigError as exc:
        assert sampler == "lms" and "scipy" in str(exc)  # LMS needs scipy, an optional package
        return
    assert type(scheduler).__name__ == SAMPLERS[sampler][0]
    prompt = SamplePrompt("a green triangle", width=32, height=32, sample_steps=2, scale=1.0, seed=1)
    (path, _), = generate(model, [prompt], tmp_path, sampler=sampler)
    assert pixels(path).shape == (32, 32, 3)


def test_unknown_sampler_is_a_config_error(model):
    from engine.outputs.sampling import make_sampler_scheduler

    with pytest.raises(ConfigError):
        make_sampler_scheduler("karras_magic", model.noise_scheduler.config)


def test_samples_use_the_live_unet(model, tmp_path):
    """A module injected into the loaded UNet (as LoRA is) changes the sample."""
    plain = generate(model, [PROMPT], tmp_path / "plain")[0][0]
    layer = model.unet.conv_out
    handle = layer.register_forward_hook(lambda module, args, output: output + 0.5)
    try:
        changed = generate(model, [PROMPT], tmp_path / "hooked")[0][0]
    finally:
        handle.remove()
    assert (pixels(plain) != pixels(changed)).any()


def test_bf16_autocast_runs(model, tmp_path):
    (path, _), = generate(model, [PROMPT], tmp_path, dtype=torch.bfloat16)
    assert pixels(path).shape == (64, 32, 3)


def _train(model, steps: int, sample_at: int | None, out_dir):
    """A few real optimizer steps on one UNet layer, with dropout-free noise and timestep draws
    from the global RNG (as the loop makes them), optionally sampling in the middle."""
    unet = model.unet
    weight = unet.conv_in.weight
    start = weight.detach().clone()
    weight.requires_grad_(True)
    unet.train()
    optimizer = torch.optim.AdamW([weight], lr=1e-2)
    torch.manual_seed(0)
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim)
    pooled = torch.randn(1, model.text_encoder2.config.projection_dim)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]])
    latents = torch.randn(1, 4, 8, 8)
    try:
        for step in range(steps):
            if step == sample_at:
                unseeded = SamplePrompt("a red circle", width=32, height=32, sample_steps=1, scale=1.0)
                generate(model, [unseeded, PROMPT], out_dir, step=step)
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (1,))
            noisy = model.noise_scheduler.add_noise(latents, noise, t)
            pred = unet(noisy, t, encoder_hidden_states=hidden,
                        added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        trained = weight.detach().clone()
        mode = (unet.training, unet.conv_in.training, model.vae.training, model.text_encoder1.training)
    finally:
        with torch.no_grad():
            weight.copy_(start)
        weight.requires_grad_(False)
        unet.eval()
    return trained, mode, torch.get_rng_state()


def test_random_state_is_restored_even_when_generation_draws_from_it(model, tmp_path):
    """Seeded samples use their own generator; anything inside that still draws from the global
    generators (a custom module, a scheduler) must not shift the training's random stream."""
    import random

    import numpy as np

    def draw(*_):
        torch.rand(1)
        random.random()
        np.random.rand()

    handle = model.unet.register_forward_pre_hook(draw)
    try:
        before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        generate(model, [PROMPT], tmp_path)
        after = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    finally:
        handle.remove()
    assert torch.equal(before[0], after[0])
    assert before[1] == after[1]
    assert (before[2] == after[2]).all()


def test_sampling_mid_training_changes_nothing(model, tmp_path):
    model.vae.eval()
    model.text_encoder1.eval()
    without, mode_without, rng_without = _train(model, 3, None, tmp_path)
    with_sample, mode_with, rng_with = _train(model, 3, 1, tmp_path)
    assert list((tmp_path / "sample").glob("*.png"))
    torch.testing.assert_close(without, with_sample, rtol=0, atol=0)
    assert mode_with == mode_without == (True, True, False, False)
    assert torch.equal(rng_with, rng_without)


@pytest.mark.parametrize("options", [
    {},  # LoRA on the UNet and both text encoders, latents cached in memory
    {"network_train_unet_only": True, "cache_text_encoder_outputs": True},  # encoders parked off the device
], ids=["unet+te", "unet-only-cached-text"])
@pytest.mark.e2e
def test_engine_run_gives_the_same_lora_with_samples_in_the_middle(tmp_path, tiny_model, demo_dataset, options):
    from small_dataset import small_dataset
    from train_helpers import tiny_config, train

    one_image = small_dataset(tmp_path / "data", demo_dataset)  # batch 1: the data plays no part here

    def run(name, **extra):
        return train(tiny_config(tmp_path / name, tiny_model, one_image, max_train_steps=3, **options, **extra))

    prompts = tmp_path / "prompts.txt"  # one demo-style prompt (guidance on: both text passes run)
    prompts.write_text("a red circle --w 64 --h 64 --s 2 --l 5 --d 1\n")
    plain = run("plain")
    sampled = run("sampled", sample_prompts=str(prompts), sample_every_n_steps=2, sample_at_first=True,
                  sample_sampler="euler_a")
    assert plain.result.ok and sampled.result.ok, (plain.result.error, sampled.result.error)
    assert len(list(Path(sampled.result.output_dir, "sample").glob("*.png"))) == 2  # steps 0 and 2 of 3
    assert plain.losses == sampled.losses
    a, b = plain.lora(), sampled.lora()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unwrap_reaches_the_module_under_ddp_and_compile_wrappers():
    from engine.outputs.sampling import unwrap

    inner = torch.nn.Linear(2, 2)

    class Wrapper(torch.nn.Module):  # the attribute names DDP and torch.compile use
        def __init__(self, name, child):
            super().__init__()
            setattr(self, name, child)

    assert unwrap(Wrapper("module", Wrapper("_orig_mod", inner))) is inner
    assert unwrap(inner) is inner
