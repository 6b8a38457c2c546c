"""max_token_length 150 / 225: sd-scripts' windows of 77 tokens through both encoders."""
from __future__ import annotations

import torch
from transformers import CLIPTokenizer

from engine.model.long_prompts import join_windows, window_ids


def _tokenizers(tiny_model):
    folder = str(tiny_model.diffusers_dir)
    return (CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer_2"))


def test_windows_carry_the_caption_in_order_with_bos_and_eos(tiny_model):
    tok1, tok2 = _tokenizers(tiny_model)
    words = []
    while len(tok1(" ".join(words), add_special_tokens=False).input_ids) <= 100:
        words.append(f"w{len(words)}")
    caption = " ".join(words)  # more than 75 tokens, fewer than 150
    plain = tok1(caption, add_special_tokens=False).input_ids
    assert 75 < len(plain) < 150
    for tok in (tok1, tok2):
        ids = window_ids(tok, [caption, "short"], 150)
        assert ids.shape == (4, 77)  # 2 captions x 2 windows
        first, second = ids[0], ids[1]
        assert first[0] == tok.bos_token_id == second[0]
        inner = torch.cat([first[1:76], second[1:76]]).tolist()
        assert inner[:len(plain)] == plain  # the whole caption, split across the windows
        assert first[-1] == tok.eos_token_id  # a window cut mid-caption ends with <EOS>
    # tokenizer 2 pads with "!": an empty window starts <BOS> <EOS>, as sd-scripts makes it
    short = window_ids(tok2, ["short"], 225)
    assert short.shape == (3, 77) and short[1, 1] == tok2.eos_token_id and short[2, 1] == tok2.eos_token_id


def test_join_windows_keeps_bos_inner_states_and_last():
    hidden = torch.arange(2 * 3 * 77, dtype=torch.float32).reshape(2 * 3, 77, 1)  # B = 2, n = 3
    joined = join_windows(hidden, 2)
    assert joined.shape == (2, 227, 1)
    per = hidden.reshape(2, 231, 1)
    expected = torch.cat([per[:, :1], per[:, 1:76], per[:, 78:153], per[:, 155:230], per[:, -1:]], dim=1)
    assert torch.equal(joined, expected)


def test_encode_captions_with_225_tokens_gives_227_states(tiny_model):
    from engine.config.schema import ModelSection
    from engine.model.encode import encode_captions
    from engine.model.load import load_sdxl

    model = load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.diffusers_dir)))
    short_hidden, short_pooled = encode_captions(model, ["a dog"], "cpu")
    model.max_token_length = 225
    hidden, pooled = encode_captions(model, ["a dog", " ".join(["cat"] * 100)], "cpu")
    assert hidden.shape[:2] == (2, 227) and short_hidden.shape[:2] == (1, 77)
    # the first window of a short caption is the 77-token encoding: same BOS + tokens, same pooled
    torch.testing.assert_close(hidden[0, :76], short_hidden[0, :76])
    torch.testing.assert_close(pooled[0], short_pooled[0])
