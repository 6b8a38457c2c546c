"""The wizard's model step says which tokenizers a run will use (sdxl_tui/screens/step_model.py,
engine/model/tokenizer_source.describe_tokenizers): headers and folders only, no model load."""
from __future__ import annotations

from sdxl_tui.screens.step_model import describe_model


def test_model_step_names_the_tokenizers(tiny_model):
    folder = describe_model(str(tiny_model.diffusers_dir))
    assert "tokenizers:" in folder and "from the model folder" in folder
    single = describe_model(str(tiny_model.single_file), str(tiny_model.diffusers_dir))
    assert "tokenizers from" in single and "diffusers layout" in single
    # the tiny model's own vocabulary is not CLIP's: the step says what to set, before any load
    missing = describe_model(str(tiny_model.single_file))
    assert "✗ tokenizers" in missing and "tokenizer_cache_dir" in missing
    hub = describe_model("stabilityai/stable-diffusion-xl-base-1.0")
    assert "tokenizers from the Hub model" in hub
