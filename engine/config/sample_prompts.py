"""sd-scripts' sample prompt files: one prompt per line with inline options, or .toml / .json.

Text form: `a photo of sks dog --n blurry --w 1024 --h 1024 --s 30 --l 7 --d 42`; lines that
start with `#` and blank lines are skipped. `--ss NAME` picks a sampler for that prompt.
TOML form: a `[prompt]` table of defaults with `[[prompt.subset]]` entries, each merged over
the defaults. JSON form: a list whose items are prompt lines or dicts. Dict keys are
sd-scripts': prompt, negative_prompt, width, height, sample_steps, scale, seed, sample_sampler.
Defaults are sd-scripts': 512 x 512, 30 steps, guidance 7.5, a fresh random seed.

Every value is range-checked when the file is read, which `engine/train/run.py` does when it
checks the config, before the model loads: a prompt that would crash the first sample must not
cost a trained step. `--d -1` (or seed = -1) means a fresh random seed (sd-scripts' regex
`d (\\d+)` does not match it, so its seed stays unset, i.e. random). Text that looks like an option
with one dash (`-w 640`) and options sd-scripts knows but sdxl-tui does not use are warnings.
The file is UTF-8 with or without BOM (engine/storage/text.py).
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
MAX_SIZE = 8192
MAX_STEPS = 1000  # sd-scripts clamps --s to 1..1000
MAX_SCALE = 100.0
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range
RANDOM_SEED = -1
# sd-scripts' inline options sdxl-tui has no use for (ControlNet, guidance rescale, flow shift...)
_UNUSED_OPTIONS = ("g", "cn", "ctr", "rcfg", "fs", "am", "f")


@dataclass(frozen=True)
class SamplePrompt:
    """One prompt line of a sample prompts file with its options (sd-scripts' --n, --w, --h, --s, --l, --d, --ss);
    sizes in pixels."""
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


def line_warnings(line: str) -> list[str]:
    """Single-dash look-alikes (`-w 640`) and inline options sdxl-tui does not use."""
    out = []
    for match in re.finditer(r"(?:^|\s)-(ss|[whdsln])\s+(\S+)", line):
        out.append(f"'-{match.group(1)} {match.group(2)}' is prompt text, not an option: "
                   f"write --{match.group(1)} {match.group(2)} (two dashes)")
    for part in line.split(" --")[1:]:
        letters = part.strip().split(" ", 1)[0].lower()
        if letters in _UNUSED_OPTIONS or (letters and not any(letters == o for o, _, _ in _OPTIONS)):
            out.append(f"--{letters} is not an option sdxl-tui uses for samples (known: "
                       f"{', '.join('--' + o for o, _, _ in _OPTIONS)}); it is left out")
    return out


def parse_prompt_line(line: str) -> dict[str, Any]:
    """One text line -> sd-scripts' prompt dict (unknown options are left out; `line_warnings` names them)."""
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
        prompt = replace(prompt, width=int(prompt.width), height=int(prompt.height),
                         sample_steps=int(prompt.sample_steps), scale=float(prompt.scale),
                         seed=None if prompt.seed is None else int(prompt.seed),
                         negative_prompt=str(prompt.negative_prompt), prompt=str(prompt.prompt))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"sample prompt {index + 1}: {exc}", path=source) from None
    _check_ranges(prompt, source)
    return replace(prompt, seed=None) if prompt.seed == RANDOM_SEED else prompt


def _check_ranges(prompt: SamplePrompt, source: str) -> None:
    import math

    checks = [("width (--w)", prompt.width, SIZE_MULTIPLE, MAX_SIZE),
              ("height (--h)", prompt.height, SIZE_MULTIPLE, MAX_SIZE),
              ("sample_steps (--s)", prompt.sample_steps, 1, MAX_STEPS), ("scale (--l)", prompt.scale, 0.0, MAX_SCALE)]
    if prompt.seed is not None and prompt.seed != RANDOM_SEED:
        checks.append(("seed (--d)", prompt.seed, 0, MAX_SEED))
    for name, value, low, high in checks:
        if not (isinstance(value, int) or math.isfinite(value)) or not low <= value <= high:
            raise ConfigError(f"sample prompt {prompt.index + 1}: {name} = {value} is outside {low}..{high}"
                              + (" (or -1 for a random seed)" if name.startswith("seed") else ""),
                              path=source, key="sampling.sample_prompts",
                              hint=f"change it in the prompts file; prompt: {prompt.prompt[:60]!r}")


def _read_entries(path: Path) -> list[Any]:
    from engine.storage.text import read_text, split_lines

    text = read_text(path, kind="config", what="sample prompts file")
    suffix = path.suffix.lower()
    if suffix == ".toml":
        from engine.config.toml_text import parse_toml

        data = parse_toml(text, str(path)).unwrap()
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
    return [line.strip() for line in split_lines(text) if line.strip() and not line.lstrip().startswith("#")]


def parse_sample_prompts(path: str | Path) -> list[SamplePrompt]:
    """Every prompt in a sample prompts file (.txt or any other suffix, .toml, .json)."""
    return read_sample_prompts(path)[0]


def read_sample_prompts(path: str | Path) -> tuple[list[SamplePrompt], list[str]]:
    """(prompts, warnings); ConfigError (exit 78) for a missing file, bad text or a value out of range."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sample prompts file not found: {path}",
                          hint="check sample_prompts, or leave it empty for no samples")
    prompts, warnings = [], []
    for index, entry in enumerate(_read_entries(path)):
        if isinstance(entry, str):
            warnings += [f"{path}: sample prompt {index + 1}: {w}" for w in line_warnings(entry)]
            entry = parse_prompt_line(entry)
        if not isinstance(entry, dict):
            raise ConfigError(f"sample prompt {index + 1} is neither text nor a table", path=str(path))
        prompts.append(_from_dict(entry, index, str(path)))
    return prompts, warnings
