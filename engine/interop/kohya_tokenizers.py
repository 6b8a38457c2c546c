"""The tokenizer folder sd-scripts reads offline, written by `export-kohya`.

sd-scripts (library/strategy_base.py `_load_tokenizer`) loads SDXL's tokenizers from
`<tokenizer_cache_dir>/openai_clip-vit-large-patch14/` and
`<tokenizer_cache_dir>/laion_CLIP-ViT-bigG-14-laion2B-39B-b160k/` when they exist, and from the
Hub otherwise. Exporting writes both, so the exported run needs no network for them:
copies of the run's own tokenizers when tokenizer_cache_dir is a diffusers folder, else SDXL's
CLIP BPE vocabulary shipped with sdxl-tui, as the classic `vocab.json` + `merges.txt` that every
transformers version reads, with 77 as the model length (sd-scripts takes its max_length from it).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.model.tokenizer_source import DIFFUSERS_TOKENIZER_DIRS, SD_SCRIPTS_TOKENIZER_DIRS, find_tokenizers

CACHE_FOLDER = "tokenizer_cache"


def _write_clip_tokenizer(folder: Path, pad_token: str) -> None:
    from engine.model.clip_tokenizer import END, MAX_LENGTH, START, clip_vocab_and_merges
    from engine.storage.atomic import atomic_write_text

    vocab, merges = clip_vocab_and_merges()
    atomic_write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MAX_LENGTH, "do_lower_case": True,
              "bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
    atomic_write_text(folder / "tokenizer_config.json", json.dumps(config, indent=2))
    atomic_write_text(folder / "special_tokens_map.json", json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2))


def write_sd_scripts_tokenizer_cache(out_dir: Path, tokenizer_cache_dir: str = "") -> tuple[Path, str]:
    """(folder to give sd-scripts as tokenizer_cache_dir, a note). A tokenizer_cache_dir already in
    sd-scripts' layout is returned as it is; nothing else is changed there."""
    from engine.model.clip_tokenizer import CLIP_VOCAB_SIZE, END

    clip = (CLIP_VOCAB_SIZE, CLIP_VOCAB_SIZE)
    source = find_tokenizers(tokenizer_cache_dir, clip) if tokenizer_cache_dir else None
    if source is not None and source.kind == "sd-scripts":
        return Path(tokenizer_cache_dir).expanduser(), "tokenizer_cache_dir is already in sd-scripts' layout"
    target = Path(out_dir) / CACHE_FOLDER
    for name in SD_SCRIPTS_TOKENIZER_DIRS:
        shutil.rmtree(target / name, ignore_errors=True)
    if source is not None and source.kind == "diffusers":
        for ours, theirs in zip(DIFFUSERS_TOKENIZER_DIRS, SD_SCRIPTS_TOKENIZER_DIRS):
            shutil.copytree(Path(tokenizer_cache_dir).expanduser() / ours, target / theirs)
        return target, f"tokenizers copied from {tokenizer_cache_dir} into {target} in sd-scripts' layout"
    _write_clip_tokenizer(target / SD_SCRIPTS_TOKENIZER_DIRS[0], END)
    _write_clip_tokenizer(target / SD_SCRIPTS_TOKENIZER_DIRS[1], "!")
    return target, (f"SDXL's CLIP tokenizers written to {target} (sd-scripts' layout): "
                    "sd-scripts needs no network for them")
