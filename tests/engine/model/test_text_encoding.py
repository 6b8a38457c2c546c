"""SDXL conditioning and VAE encoding on the tiny SDXL (real CLIP encoders and a real VAE)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from train_helpers import one_torch_thread  # noqa: E402,F401  (autouse: one thread is faster for the tiny model here)

from engine.model.encode import encode_captions, tokenize, vae_encode  # noqa: E402


@pytest.fixture(scope="module")
def tiny_parts(tiny_model):
    from engine.config.schema import RunConfig
    from engine.model.load import load_sdxl

    cfg = RunConfig().with_values(pretrained_model_name_or_path=str(tiny_model.diffusers_dir))
    return load_sdxl(cfg.model)

CAPTIONS = ["a red circle on a white background", "blue"]


def test_shapes_follow_sdxl_layout(tiny_parts):
    hidden, pooled = encode_captions(tiny_parts, CAPTIONS, "cpu")
    w1 = tiny_parts.text_encoder1.config.hidden_size
    w2 = tiny_parts.text_encoder2.config.hidden_size
    assert hidden.shape == (2, 77, w1 + w2)
    assert pooled.shape == (2, tiny_parts.text_encoder2.config.projection_dim)


def test_tokenizer_two_pads_with_exclamation_mark_and_one_with_end_token(tiny_parts):
    ids1 = tokenize(tiny_parts.tokenizer1, tiny_parts.text_encoder1, ["blue"])[0]
    ids2 = tokenize(tiny_parts.tokenizer2, tiny_parts.text_encoder2, ["blue"])[0]
    assert ids1.shape == ids2.shape == (77,)
    assert tiny_parts.tokenizer2.convert_ids_to_tokens(int(ids2[-1])) == "!"
    assert int(ids2[-1]) == 0
    assert int(ids1[-1]) == tiny_parts.tokenizer1.eos_token_id


def test_hidden_is_both_penultimate_states_and_pooled_is_projected(tiny_parts):
    hidden, pooled = encode_captions(tiny_parts, CAPTIONS, "cpu")
    te1, te2 = tiny_parts.text_encoder1, tiny_parts.text_encoder2
    with torch.no_grad():
        out1 = te1(tokenize(tiny_parts.tokenizer1, te1, CAPTIONS), output_hidden_states=True)
        out2 = te2(tokenize(tiny_parts.tokenizer2, te2, CAPTIONS), output_hidden_states=True)
    w1 = te1.config.hidden_size
    torch.testing.assert_close(hidden[..., :w1], out1.hidden_states[-2])
    torch.testing.assert_close(hidden[..., w1:], out2.hidden_states[-2])
    # not the last layer: the penultimate one
    assert not torch.allclose(hidden[..., :w1], out1.last_hidden_state)
    torch.testing.assert_close(pooled, out2.text_embeds)
    # different captions, different conditioning
    assert not torch.allclose(hidden[0], hidden[1])


def test_dtype_argument_casts_outputs(tiny_parts):
    hidden, pooled = encode_captions(tiny_parts, CAPTIONS, "cpu", dtype=torch.bfloat16)
    assert hidden.dtype == pooled.dtype == torch.bfloat16


def test_graph_only_when_an_encoder_is_trained(tiny_parts):
    te1, te2 = tiny_parts.text_encoder1, tiny_parts.text_encoder2
    saved = [(p, p.requires_grad) for p in list(te1.parameters()) + list(te2.parameters())]
    try:
        for p, _ in saved:
            p.requires_grad_(False)
        hidden, pooled = encode_captions(tiny_parts, CAPTIONS, "cpu")
        assert not hidden.requires_grad and not pooled.requires_grad

        trained = dict(te1.named_parameters())["encoder.layers.0.self_attn.q_proj.weight"]
        trained.requires_grad_(True)
        hidden, _ = encode_captions(tiny_parts, CAPTIONS, "cpu")
        assert hidden.requires_grad
        hidden.sum().backward()
        assert trained.grad is not None and trained.grad.abs().sum() > 0
        trained.grad = None
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def test_vae_encode_samples_scaled_latents_from_the_generator(tiny_parts):
    vae = tiny_parts.vae
    pixels = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a = vae_encode(vae, pixels, torch.Generator().manual_seed(7))
    b = vae_encode(vae, pixels, torch.Generator().manual_seed(7))
    c = vae_encode(vae, pixels, torch.Generator().manual_seed(8))
    assert a.shape == (2, 4, 8, 12)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)  # a sample, not the mode
    with torch.no_grad():
        dist = vae.encode(pixels).latent_dist
    expected = dist.sample(generator=torch.Generator().manual_seed(7)) * vae.config.scaling_factor
    torch.testing.assert_close(a, expected)
    assert not a.requires_grad
