"""engine.model.safetensors_read: tensors read one at a time without a memory map (issue 17:
the text encoders of a single file were held twice while converted) equal safetensors' own."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.model.safetensors_read import read_header, read_prefixed


def test_reads_the_prefixed_tensors_exactly_and_casts_only_floats(tmp_path):
    path = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    tensors = {"a.w": torch.randn(3, 5).half(), "a.b": torch.randn(4).to(torch.bfloat16),
               "a.ids": torch.arange(7), "a.empty": torch.zeros(0, 3), "b.w": torch.randn(2, 2)}
    save_file(tensors, str(path), metadata={"x": "y"})
    header, start = read_header(path)
    assert set(header) == set(tensors) and start > 8
    kept = read_prefixed(path, "a.")
    assert set(kept) == {"w", "b", "ids", "empty"}
    for key, value in kept.items():
        assert value.dtype == tensors[f"a.{key}"].dtype
        assert torch.equal(value, tensors[f"a.{key}"])
    cast = read_prefixed(path, "a.", float_dtype=torch.float32)
    assert cast["w"].dtype == torch.float32 and torch.equal(cast["w"], tensors["a.w"].float())
    assert cast["ids"].dtype == torch.int64
    assert torch.equal(read_prefixed(path, "b.")["w"], load_file(str(path))["b.w"])


def test_a_cut_file_is_an_error(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="cut short"):
        read_prefixed(path, "")


def test_cast_tensors_are_their_own_copies_though_read_through_one_staging_buffer(tmp_path):
    path = tmp_path / "m.safetensors"
    torch.manual_seed(1)
    tensors = {f"t{n}": torch.randn(n + 1, 7).half() for n in (5, 2, 9, 0, 3)}  # sizes up and down
    tensors["scalar"] = torch.tensor(2.5, dtype=torch.float16)
    save_file(tensors, str(path))
    cast = read_prefixed(path, "", float_dtype=torch.float32)
    pointers = {value.untyped_storage().data_ptr() for value in cast.values()}
    assert len(pointers) == len(cast)  # no two results share memory (nor the reused staging buffer)
    for key, value in cast.items():  # every result still holds its own values after all were read
        assert value.dtype == torch.float32 and torch.equal(value, tensors[key].float()), key
