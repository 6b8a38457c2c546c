"""Where a single-file model's two tokenizers come from, decided without loading anything.

In order:
1. `tokenizer_cache_dir` in diffusers' layout (`tokenizer/` + `tokenizer_2/`);
2. `tokenizer_cache_dir` in sd-scripts' layout (library/strategy_base.py saves each tokenizer
   under its Hub id with `/` -> `_`): `openai_clip-vit-large-patch14/` and
   `laion_CLIP-ViT-bigG-14-laion2B-39B-b160k/`; tokenizer 2 then pads with id 0 (`!`), as
   sd-scripts sets it (library/strategy_sdxl.py);
3. the CLIP BPE vocabulary shipped with sdxl-tui (engine.model.clip_tokenizer), when the file's
   text encoders have CLIP's 49408-token embedding. No network is ever used.
Otherwise a ModelError names `tokenizer_cache_dir`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from engine.errors import ModelError

SD_SCRIPTS_TOKENIZER_DIRS = ("openai_clip-vit-large-patch14", "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k")
DIFFUSERS_TOKENIZER_DIRS = ("tokenizer", "tokenizer_2")
TE1_EMBEDDING = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"
TE2_EMBEDDING = "conditioner.embedders.1.model.token_embedding.weight"

TokenizerKind = Literal["diffusers", "sd-scripts", "built-in"]


@dataclass(frozen=True)
class TokenizerSource:
    """Where the two tokenizers come from (built in, the model's folders, or tokenizer_cache_dir) and a line
    describing it."""
    kind: TokenizerKind
    folders: tuple[Optional[Path], Optional[Path]]
    description: str  # one line for the wizard and the log


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())


def vocab_sizes(shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """Rows of each text encoder's token embedding in a single file's header (0 if absent)."""
    return shapes.get(TE1_EMBEDDING, (0,))[0], shapes.get(TE2_EMBEDDING, (0,))[0]


def find_tokenizers(tokenizer_cache_dir: str, sizes: tuple[int, int], model_name: str = "the model"
                    ) -> TokenizerSource:
    """Decide the tokenizer source; raises ModelError when none fits (the message names the fix)."""
    from engine.model.clip_tokenizer import CLIP_VOCAB_SIZE

    local = Path(tokenizer_cache_dir).expanduser() if tokenizer_cache_dir else None
    if local is not None:
        for kind, names in (("diffusers", DIFFUSERS_TOKENIZER_DIRS), ("sd-scripts", SD_SCRIPTS_TOKENIZER_DIRS)):
            folders = tuple(local / name for name in names)
            if all(_has_tokenizer_files(f) for f in folders):
                return TokenizerSource(kind, folders, f"tokenizers from {local} ({kind} layout: "
                                                      f"{', '.join(n + '/' for n in names)})")
    if sizes == (CLIP_VOCAB_SIZE, CLIP_VOCAB_SIZE):
        where = f" ({local} has no tokenizer folders)" if local is not None else ""
        return TokenizerSource("built-in", (None, None),
                               f"built-in CLIP BPE tokenizers (SDXL's own vocabulary, no download){where}")
    found = f"{local} has neither tokenizer/ + tokenizer_2/ nor sd-scripts' " \
            f"{' + '.join(SD_SCRIPTS_TOKENIZER_DIRS)}" if local is not None else "no tokenizer_cache_dir is set"
    raise ModelError(
        f"{model_name}'s text encoders have {sizes[0]} and {sizes[1]} tokens, not CLIP's {CLIP_VOCAB_SIZE}, "
        f"so SDXL's tokenizers do not fit, and {found}",
        hint="set tokenizer_cache_dir to a folder with this model's tokenizers: tokenizer/ and tokenizer_2/ "
             "(a diffusers folder of it) or sd-scripts' " + " and ".join(SD_SCRIPTS_TOKENIZER_DIRS))


def load_tokenizers(source: TokenizerSource) -> tuple[Any, Any]:
    """(tokenizer 1, tokenizer 2) as `source` says; tokenizer 2 always pads with id 0 (`!`)."""
    from engine.model.clip_tokenizer import sdxl_tokenizers
    from engine.model.source import checked_tokenizer

    if source.kind == "built-in":
        return sdxl_tokenizers()
    from transformers import CLIPTokenizer

    try:
        first, second = (checked_tokenizer(CLIPTokenizer.from_pretrained(str(folder), local_files_only=True),
                                           str(folder)) for folder in source.folders)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the tokenizers in {source.folders[0].parent}: {exc}",
                         hint="copy the tokenizer folders again, or clear tokenizer_cache_dir") from exc
    if source.kind == "sd-scripts" and second.pad_token != "!":
        second.pad_token = "!"  # sd-scripts: tokenizer2.pad_token_id = 0
    return first, second


def describe_tokenizers(source: Any, tokenizer_cache_dir: str = "") -> str:
    """One line saying which tokenizers a model source (engine.model.source.ModelSource) will use;
    cheap (headers and folder listings only), for the wizard. Raises ModelError when none fit."""
    if source.kind == "single_file":
        from engine.model.source import read_header_shapes

        shapes = read_header_shapes(Path(source.path))
        return find_tokenizers(tokenizer_cache_dir, vocab_sizes(shapes), Path(source.path).name).description
    if source.kind == "diffusers":
        return f"tokenizers from the model folder ({', '.join(n + '/' for n in DIFFUSERS_TOKENIZER_DIRS)})"
    return "tokenizers from the Hub model (its tokenizer/ and tokenizer_2/, cached after the first download)"
