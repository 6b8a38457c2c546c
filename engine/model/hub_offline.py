"""A Hub id on a machine that cannot reach the Hub: fail within seconds, or use the cache.

huggingface_hub retries an unreachable Hub for minutes before giving up. One short TCP probe
(engine.model.source.hub_reachable) decides first: a model that is not cached is a ModelError
naming HF_HUB_OFFLINE and tokenizer_cache_dir; a cached one loads from the cache as with
HF_HUB_OFFLINE=1 (set for this process, so no later look-up waits either).
"""
from __future__ import annotations

import os

from engine.model.source import (
    check_sdxl_shape,
    detect_model_source,
    hub_error,
    hub_offline,
    hub_reachable,
    hub_unreachable_error,
)


def check_model_before_loading(name_or_path: str) -> list[str]:
    """Path, file type (pickle refused), SDXL shape from the header, the Hub cache, and whether the
    Hub can be reached (within seconds): a ModelError before the output folder is claimed or a
    model loads. Returns notes for the run's warnings."""
    source = detect_model_source(name_or_path)
    shape = check_sdxl_shape(source)
    if source.kind != "hub":
        return []
    if hub_offline():
        if shape is None:
            raise hub_error(source.path, FileNotFoundError(source.path))
        return []
    return go_offline_when_unreachable(source.path, cached=shape is not None)


def go_offline_when_unreachable(repo_id: str, *, cached: bool) -> list[str]:
    """[] when the Hub answers; a note when it does not and `repo_id` is cached (offline mode is
    then on for this process); raises ModelError when it does not and nothing is cached."""
    if hub_reachable():
        return []
    if not cached:
        raise hub_unreachable_error(repo_id)
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants

        constants.HF_HUB_OFFLINE = True  # read at call time by huggingface_hub's download functions
    except ImportError:
        pass
    return [f"the Hugging Face Hub cannot be reached: {repo_id} loads from the local cache "
            "(HF_HUB_OFFLINE=1 for this run)"]
