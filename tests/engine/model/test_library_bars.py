"""transformers' per-model progress bars stay off our output while a local model loads or is written."""
import pytest
from transformers.utils import logging as transformers_logging

from engine.config.schema import ModelSection
from engine.model.library_bars import transformers_bars_off
from engine.model.load import load_sdxl


def test_a_local_folder_loads_without_transformers_bars_and_the_setting_comes_back(tiny_model, capfd):
    transformers_logging.enable_progress_bar()  # (the test session turns bars off through the environment)
    try:
        capfd.readouterr()
        model = load_sdxl(ModelSection(pretrained_model_name_or_path=str(tiny_model.diffusers_dir)))
        err = capfd.readouterr().err
        assert model.text_encoder1 is not None and model.text_encoder2 is not None
        assert "Loading weights" not in err and "it/s]" not in err, err
        assert transformers_logging.is_progress_bar_enabled()
    finally:
        transformers_logging.disable_progress_bar()


@pytest.mark.parametrize("was_on", [True, False])
def test_the_previous_setting_is_restored_also_after_an_error(was_on):
    (transformers_logging.enable_progress_bar if was_on else transformers_logging.disable_progress_bar)()
    try:
        with pytest.raises(RuntimeError), transformers_bars_off():
            assert not transformers_logging.is_progress_bar_enabled()
            raise RuntimeError("load failed")
        assert transformers_logging.is_progress_bar_enabled() is was_on
    finally:
        transformers_logging.disable_progress_bar()  # as the test session has it
