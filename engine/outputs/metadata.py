"""The saving options that shape a LoRA file's metadata: `metadata_*`, `training_comment`,
`no_metadata`, applied on top of `engine.lora.file.build_metadata`.

What sd-scripts writes (library/sai_model_spec.py, library/train_util.py `get_sai_model_spec`,
train_network.py `save_model`):
  - `metadata_title` replaces `modelspec.title` (which defaults to output_name);
  - `metadata_author/description/license/tags` -> `modelspec.author/...`;
  - every other `metadata_<name>` -> `modelspec.<name>` (usage_hint, thumbnail, merged_from,
    trigger_phrase, preprocessor); a thumbnail file path is stored as a `data:` URL;
  - `training_comment` -> `ss_training_comment` (str() of the value, so "None" when unset);
  - `no_metadata` keeps only `SS_METADATA_MINIMUM_KEYS` plus the `modelspec.*` keys (the
    `sshs_*` hashes are added at save time either way).
"""
from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any, Mapping

from engine.errors import ConfigError

# sd-scripts' library/train_util.py SS_METADATA_MINIMUM_KEYS
SS_METADATA_MINIMUM_KEYS = ("ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim",
                            "ss_network_alpha", "ss_network_args")
# metadata_<name> option -> modelspec.<name> key (title is handled apart: it has a default)
MODELSPEC_OPTIONS = ("author", "description", "license", "tags", "usage_hint", "thumbnail", "merged_from",
                     "trigger_phrase", "preprocessor")


def thumbnail_data_url(value: str) -> str:
    """A `data:` URL as given, or an image file read into one (base64, MIME type from the name).

    Raises ConfigError naming `metadata_thumbnail` when the file does not exist. sd-scripts only
    logs a warning and drops the key; here the mistake is reported before training."""
    if value.startswith("data:"):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigError(f"metadata_thumbnail: file not found: {value}", key="metadata_thumbnail",
                          hint="give an image file that exists, or a data: URL")
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def modelspec_options(saving: Any) -> dict[str, str]:
    """The `modelspec.*` keys the metadata_* options of `saving` (a SavingSection) set."""
    out: dict[str, str] = {}
    if saving.metadata_title:
        out["modelspec.title"] = saving.metadata_title
    for name in MODELSPEC_OPTIONS:
        value = getattr(saving, f"metadata_{name}")
        if value:
            out[f"modelspec.{name}"] = thumbnail_data_url(value) if name == "thumbnail" else value
    return out


def apply_saving_options(metadata: Mapping[str, str], saving: Any) -> dict[str, str]:
    """`metadata` (from build_metadata) with the saving section's metadata options applied."""
    out = dict(metadata)
    out["ss_training_comment"] = saving.training_comment if saving.training_comment else "None"
    out.update(modelspec_options(saving))
    if saving.no_metadata:
        out = {key: value for key, value in out.items()
               if key in SS_METADATA_MINIMUM_KEYS or key.startswith("modelspec.")}
    return out
