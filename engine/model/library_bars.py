"""transformers' own progress bars, off while we load or write a local model."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """transformers 5 draws a tqdm bar per model on stderr ("Loading weights", "Writing model
    shards"). Our own progress events already report each part, and in the plain log or under
    the live panel those bars are noise. transformers' switch also silences huggingface_hub's
    download bars, so use it only for local folders and files, where nothing downloads. The
    previous setting is restored on exit, also when the block raises."""
    from transformers.utils import logging as transformers_logging

    was_on = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            transformers_logging.enable_progress_bar()
