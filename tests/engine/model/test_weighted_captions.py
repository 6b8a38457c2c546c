"""weighted_captions: A1111 attention syntax parsed as sd-scripts, weights on the hidden states."""
from __future__ import annotations

import pytest
import torch
from transformers import CLIPTokenizer

from engine.model.weighted_captions import parse_attention, weighted_ids


@pytest.mark.parametrize("text, expected", [  # sd-scripts' own doctest examples
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.1 * 1.1 * 1.3), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
      (", sun, ", 1.1), ("sky", 1.1 ** 4), (".", 1.1)]),
])
def test_parse_attention(text, expected):
    got = parse_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_weighted_ids_and_encoding(tiny_model):
    from engine.config.schema import ModelSection
    from engine.model.encode import encode_captions
    from engine.model.load import load_sdxl

    tok = CLIPTokenizer.from_pretrained(str(tiny_model.diffusers_dir), subfolder="tokenizer")
    ids, weights = weighted_ids(tok, ["a (dog:1.5) runs"])
    dog = tok("dog").input_ids[1:-1]
    start = 1 + len(tok("a ").input_ids[1:-1])
    assert ids[0, start:start + len(dog)].tolist() == dog
    assert weights[0, start:start + len(dog)].tolist() == [1.5] * len(dog)
    assert weights[0, :start].tolist() == [1.0] * start and ids.shape == weights.shape == (1, 77)
    assert ids[0, 0] == tok.bos_token_id

    model = load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.diffusers_dir)))
    plain_hidden, plain_pooled = encode_captions(model, ["a dog runs"], "cpu")
    model.weighted_captions = True
    same_hidden, _ = encode_captions(model, ["a dog runs"], "cpu")  # no weights: the same encoding
    torch.testing.assert_close(same_hidden, plain_hidden)
    hidden, pooled = encode_captions(model, ["a (dog runs:2.0)"], "cpu")
    n = len(tok("a ").input_ids[1:-1])
    k = len(tok("dog runs").input_ids[1:-1])
    torch.testing.assert_close(hidden[0, 1 + n:1 + n + k], 2.0 * plain_hidden[0, 1 + n:1 + n + k])
    torch.testing.assert_close(hidden[0, :1 + n], plain_hidden[0, :1 + n])
    torch.testing.assert_close(pooled, plain_pooled)
