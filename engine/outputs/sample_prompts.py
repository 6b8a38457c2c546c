"""sd-scripts' sample prompt files: one prompt per line with inline options, or .toml / .json.

Text form: `a photo of sks dog --n blurry --w 1024 --h 1024 --s 30 --l 7 --d 42`; lines that
start with `#` and blank lines are skipped. `--ss NAME` picks a sampler for that prompt.
TOML form: a `[prompt]` table of defaults with `[[prompt.subset]]` entries, each merged over
the defaults. JSON form: a list whose items are prompt lines or dicts. Dict keys are
sd-scripts': prompt, negative_prompt, width, height, sample_steps, scale, seed, sample_sampler.
Defaults are sd-scripts': 512 x 512, 30 steps, guidance 7.5, a fresh random seed.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from engine.errors import ConfigError

DEFAULT_SIZE = 512
DEFAULT_STEPS = 30
DEFAULT_SCALE = 7.5
SIZE_MULTIPLE = 32  # SDXL's UNet downsamples latents 4x: images must divide by 8 * 4


@dataclass(frozen=True)
class SamplePrompt:
    prompt: str
    negative_prompt: str = ""
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    sample_steps: int = DEFAULT_STEPS
    scale: float = DEFAULT_SCALE
    seed: Optional[int] = None
    sample_sampler: Optional[str] = None  # None: the run's sample_sampler
    index: int = 0  # position in the file; names the image

    @property
    def rounded_size(self) -> tuple[int, int]:
        """(width, height) rounded down to what the UNet accepts, as sd-scripts does."""
        def fit(value: int) -> int:
            return max(SIZE_MULTIPLE, value - value % SIZE_MULTIPLE)
        return fit(self.width), fit(self.height)


# Inline options: the letters after " --", the dict key, and how to read the value.
_OPTIONS: list[tuple[str, str, Any]] = [
    ("ss", "sample_sampler", str),
    ("w", "width", int),
    ("h", "height", int),
    ("d", "seed", int),
    ("s", "sample_steps", int),
    ("l", "scale", float),
    ("n", "negative_prompt", str),
]


def parse_prompt_line(line: str) -> dict[str, Any]:
    """One text line -> sd-scripts' prompt dict (unknown options are ignored, as there)."""
    parts = line.split(" --")
    out: dict[str, Any] = {"prompt": parts[0].strip()}
    for part in parts[1:]:
        match = re.match(r"(\w+)\s+(.+)", part.strip(), re.DOTALL)
        if not match:
            continue
        letters, value = match.group(1).lower(), match.group(2).strip()
        for option, key, kind in _OPTIONS:
            if letters == option:
                try:
                    out[key] = kind(value)
                except ValueError:
                    raise ConfigError(f"sample prompt option --{option} has a bad value {value!r}",
                                      hint=f"in: {line.strip()}") from None
                break
    return out


def _from_dict(raw: dict[str, Any], index: int, source: str) -> SamplePrompt:
    known = {f for f in SamplePrompt.__dataclass_fields__ if f != "index"}
    values = {k: v for k, v in raw.items() if k in known and v is not None}
    if not str(values.get("prompt", "")).strip():
        raise ConfigError(f"sample prompt {index + 1} has no prompt text", path=source,
                          hint='give each entry a "prompt"')
    try:
        prompt = SamplePrompt(**values, index=index)
        steps = max(1, min(1000, int(prompt.sample_steps)))
        return replace(prompt, width=int(prompt.width), height=int(prompt.height),
                       sample_steps=steps, scale=float(prompt.scale),
                       seed=None if prompt.seed is None else int(prompt.seed),
                       negative_prompt=str(prompt.negative_prompt), prompt=str(prompt.prompt))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"sample prompt {index + 1}: {exc}", path=source) from None


def _read_entries(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        import tomlkit
        from tomlkit.exceptions import TOMLKitError

        try:
            data = tomlkit.parse(text).unwrap()
        except TOMLKitError as exc:
            raise ConfigError(f"sample prompts TOML does not parse: {exc}", path=str(path)) from None
        table = data.get("prompt")
        if not isinstance(table, dict) or not isinstance(table.get("subset"), list):
            raise ConfigError("sample prompts TOML needs a [prompt] table with [[prompt.subset]] entries",
                              path=str(path))
        defaults = {k: v for k, v in table.items() if k != "subset"}
        return [{**defaults, **subset} for subset in table["subset"]]
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"sample prompts JSON does not parse: {exc}", path=str(path)) from None
        if not isinstance(data, list):
            raise ConfigError("sample prompts JSON must be a list of prompts", path=str(path))
        return data
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_sample_prompts(path: str | Path) -> list[SamplePrompt]:
    """Every prompt in a sample prompts file (.txt or any other suffix, .toml, .json)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sample prompts file not found: {path}",
                          hint="check sample_prompts, or leave it empty for no samples")
    prompts = []
    for index, entry in enumerate(_read_entries(path)):
        if isinstance(entry, str):
            entry = parse_prompt_line(entry)
        if not isinstance(entry, dict):
            raise ConfigError(f"sample prompt {index + 1} is neither text nor a table", path=str(path))
        prompts.append(_from_dict(entry, index, str(path)))
    return prompts
