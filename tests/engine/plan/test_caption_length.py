"""`plan` counts the captions longer than the 75-token window, with the model's tokenizer."""
from __future__ import annotations

from transformers import CLIPTokenizer

from engine.plan.caption_length import count_long_captions


def test_counts_captions_over_75_tokens(tiny_model):
    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_model.diffusers_dir), subfolder="tokenizer")
    short = "a photo of a dog"
    long = ", ".join(["red hair"] * 40)  # well over 75 tokens
    n_long = len(tokenizer(long, add_special_tokens=False).input_ids)
    assert n_long > 75
    result = count_long_captions(tokenizer, [short, long, short])
    assert (result.captions, result.too_long, result.longest) == (3, 1, n_long)
    assert "1 of 3 are longer than 75 tokens" in result.line()
    assert count_long_captions(tokenizer, [short]).too_long == 0
