"""sd-scripts' dataset TOML (or JSON of the same shape), parsed and validated as-is.

Layout: optional `[general]`, then `[[datasets]]`, each with `[[datasets.subsets]]`.
A subset key resolves subset -> dataset -> general -> the caller's run-config defaults ->
built-in default; a dataset key resolves dataset -> general -> run config -> default. Every
resolved value remembers where it came from (`spec.origin(name)`) so the UI can say why.

Relative `image_dir` / `metadata_file` paths resolve against the TOML file's folder. sd-scripts
resolves them against the working directory, so when only the CWD-relative path exists, that
one is used (and noted in `DatasetConfig.notes`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from engine.config.names import nearest
from engine.data.dataset_keys import (
    DATASET_KEYS,
    DATASET_VALID,
    GENERAL_VALID,
    SUBSET_KEYS,
    SUBSET_ONLY_KEYS,
    SUBSET_VALID,
    KeySpec,
    Resolution,
)
from engine.errors import ConfigError

if TYPE_CHECKING:
    from engine.config.schema import RunConfig

# --- the resolved specs ---------------------------------------------------------------

class _Origins:
    origins: tuple[tuple[str, str], ...]

    def origin(self, name: str) -> str:
        """Where a resolved value came from: "subset", "dataset", "general", "run config" or "default"."""
        for key, where in self.origins:
            if key == name:
                return where
        raise KeyError(name)


@dataclass(frozen=True)
class SubsetSpec(_Origins):
    """One [[datasets.subsets]] entry after [general] and [[datasets]] defaults are applied; paths resolved."""
    index: int
    dataset_index: int
    image_dir: Optional[Path]
    metadata_file: Optional[Path]
    is_reg: bool
    alpha_mask: bool
    num_repeats: int
    shuffle_caption: bool
    caption_separator: str
    secondary_separator: Optional[str]
    keep_tokens: int
    keep_tokens_separator: str
    color_aug: bool
    flip_aug: bool
    random_crop: bool
    caption_prefix: Optional[str]
    caption_suffix: Optional[str]
    caption_dropout_rate: float
    caption_dropout_every_n_epochs: int
    caption_tag_dropout_rate: float
    caption_extension: str
    class_tokens: Optional[str]
    token_warmup_min: int
    token_warmup_step: float
    enable_wildcard: bool
    face_crop_aug_range: Optional[tuple[float, float]]
    cache_info: bool
    resize_interpolation: Optional[str]  # the subset's, else its dataset's (sd-scripts' order)
    custom_attributes: Optional[dict]
    conditioning_data_dir: Optional[str]
    origins: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def source(self) -> Path:
        """The folder (or metadata file) this subset reads."""
        return self.image_dir if self.image_dir is not None else self.metadata_file  # type: ignore[return-value]


@dataclass(frozen=True)
class DatasetSpec(_Origins):
    """One [[datasets]] entry with [general] defaults applied; resolution is (width, height) in pixels."""
    index: int
    resolution: Resolution
    batch_size: int
    enable_bucket: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    bucket_no_upscale: bool
    network_multiplier: float
    resize_interpolation: Optional[str]
    validation_split: float
    validation_seed: Optional[int]
    subsets: tuple[SubsetSpec, ...]
    origins: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def is_fine_tuning_style(self) -> bool:
        """True when its subsets are sd-scripts fine-tuning style (metadata_file JSON instead of image folders)."""
        return any(s.metadata_file is not None for s in self.subsets)


@dataclass(frozen=True)
class DatasetConfig:
    """A parsed sd-scripts dataset TOML: its datasets and the notes on keys taken as no-ops."""
    path: Optional[Path]
    datasets: tuple[DatasetSpec, ...]
    notes: tuple[str, ...] = ()

    def all_subsets(self) -> list[SubsetSpec]:
        """Every subset of every dataset, in file order."""
        return [s for d in self.datasets for s in d.subsets]


# --- locating keys in the source text for error messages -------------------------------

def _key_line(text: str, scope: tuple, key: str, is_json: bool) -> Optional[int]:
    """1-based line of `key` inside scope ("general",) / ("dataset", i) / ("subset", i, j)."""
    lines = text.splitlines()
    if is_json:
        pattern = re.compile(rf'"{re.escape(key)}"\s*:')
        hits = [n for n, line in enumerate(lines, 1) if pattern.search(line)]
        return hits[0] if hits else None
    key_re = re.compile(rf'^\s*["\']?{re.escape(key)}["\']?\s*=')
    inline_re = re.compile(rf'[{{,]\s*["\']?{re.escape(key)}["\']?\s*=')
    current: tuple = ("top",)
    datasets = -1
    subsets = -1
    fallback = None
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("[[datasets.subsets]]"):
            subsets += 1
            current = ("subset", datasets, subsets)
            continue
        if stripped.startswith("[[datasets]]"):
            datasets += 1
            subsets = -1
            current = ("dataset", datasets)
            continue
        if re.match(r"^\[\s*general\s*\]", stripped):
            current = ("general",)
            continue
        if current == scope and key_re.match(line):
            return number
        if fallback is None and inline_re.search(line):
            fallback = number
    return fallback


# --- parsing ----------------------------------------------------------------------------

class _Ctx:
    def __init__(self, text: str, path: str, is_json: bool) -> None:
        self.text, self.path, self.is_json = text, path, is_json

    def error(self, message: str, scope: tuple, key: str, hint: str = "") -> ConfigError:
        return ConfigError(message, key=key, path=self.path, hint=hint,
                           line=_key_line(self.text, scope, key, self.is_json))


def _scope_name(scope: tuple) -> str:
    if scope[0] == "general":
        return "[general]"
    if scope[0] == "dataset":
        return f"datasets[{scope[1]}]"
    return f"datasets[{scope[1]}].subsets[{scope[2]}]"


def _check_keys(ctx: _Ctx, table: Mapping[str, Any], valid: list[str], scope: tuple) -> None:
    for key in table:
        if key not in valid:
            where = _scope_name(scope)
            extra = ""
            if scope[0] == "subset" and key in DATASET_KEYS:
                extra = f" ('{key}' is a dataset-level key: put it in [[datasets]] or [general])"
            elif scope[0] != "subset" and key in SUBSET_ONLY_KEYS:
                extra = f" ('{key}' belongs in a [[datasets.subsets]] table)"
            raise ctx.error(f"unknown key '{key}' in {where}{extra}", scope, key, hint=nearest(key, valid))


def _resolve(ctx: _Ctx, name: str, spec: KeySpec, layers: list[tuple[str, Mapping[str, Any], tuple]],
             run_defaults: Mapping[str, Any]) -> tuple[Any, str]:
    for where, table, scope in layers:
        if name in table:
            try:
                return spec.check(table[name]), where
            except ValueError as exc:
                raise ctx.error(f"{_scope_name(scope)}.{name}: expected {exc}, got {table[name]!r}",
                                scope, name) from None
    if name in run_defaults:
        return run_defaults[name], "run config"
    return spec.default, "default"


def _resolve_path(raw: str, base: Path, notes: list[str]) -> Path:
    p = Path(raw).expanduser()
    if p.is_absolute():
        return p
    from_file = (base / p)
    from_cwd = Path.cwd() / p
    if not from_file.exists() and from_cwd.exists():
        notes.append(f"'{raw}' was found relative to the current directory ({from_cwd}), "
                     f"not to the dataset config's folder ({base}); sdxl-tui prefers the config's folder")
        return from_cwd
    return from_file


def _table(ctx: _Ctx, value: Any, scope: tuple, key: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.error(f"{key} must be a table ({what})", scope, key)
    return value


def _parse_subset(ctx: _Ctx, raw: Mapping[str, Any], d_index: int, s_index: int, flat_index: int,
                  dataset_layers: list, run_defaults: Mapping[str, Any], base: Path,
                  notes: list[str]) -> SubsetSpec:
    scope = ("subset", d_index, s_index)
    _check_keys(ctx, raw, SUBSET_VALID, scope)
    layers = [("subset", raw, scope), *dataset_layers]
    values: dict[str, Any] = {}
    origins: list[tuple[str, str]] = []
    for name, spec in SUBSET_KEYS.items():
        values[name], where = _resolve(ctx, name, spec, layers, run_defaults)
        origins.append((name, where))
    for name, spec in SUBSET_ONLY_KEYS.items():
        values[name], where = _resolve(ctx, name, spec, [("subset", raw, scope)], {})
        origins.append((name, where))
    if values["image_dir"] is None and values["metadata_file"] is None:
        raise ctx.error(f"{_scope_name(scope)} has neither image_dir nor metadata_file", scope, "image_dir",
                        hint="add image_dir = \"path/to/images\" to this [[datasets.subsets]] table")
    if values["metadata_file"] is not None and values["is_reg"]:
        raise ctx.error(f"{_scope_name(scope)}: metadata_file subsets cannot be regularisation images",
                        scope, "is_reg", hint="remove is_reg, or use image_dir with caption files")
    for key in ("image_dir", "metadata_file"):
        if values[key] is not None:
            values[key] = _resolve_path(values[key], base, notes)
    return SubsetSpec(index=flat_index, dataset_index=d_index, origins=tuple(origins), **values)


def _parse_dataset(ctx: _Ctx, raw: Mapping[str, Any], d_index: int, first_subset_index: int,
                   general: Mapping[str, Any], run_defaults: Mapping[str, Any], base: Path,
                   notes: list[str]) -> DatasetSpec:
    scope = ("dataset", d_index)
    _check_keys(ctx, raw, DATASET_VALID, scope)
    layers = [("dataset", raw, scope), ("general", general, ("general",))]
    values: dict[str, Any] = {}
    origins: list[tuple[str, str]] = []
    for name, spec in DATASET_KEYS.items():
        values[name], where = _resolve(ctx, name, spec, layers, run_defaults)
        origins.append((name, where))
    if values["resolution"] is None:
        raise ctx.error(f"datasets[{d_index}] has no resolution", scope, "resolution",
                        hint="set resolution = 1024 (or [width, height]) in [general] or [[datasets]]")
    _check_sdxl_geometry(ctx, values, scope)
    raw_subsets = raw.get("subsets", [])
    if not isinstance(raw_subsets, list) or not raw_subsets:
        raise ctx.error(f"datasets[{d_index}] has no [[datasets.subsets]]", scope, "subsets",
                        hint="add a [[datasets.subsets]] table with image_dir = \"...\"")
    subsets = tuple(
        _parse_subset(ctx, _table(ctx, s, ("subset", d_index, j), "subsets", "[[datasets.subsets]]"),
                      d_index, j, first_subset_index + j, layers, run_defaults, base, notes)
        for j, s in enumerate(raw_subsets))
    styles = {s.metadata_file is not None for s in subsets}
    if len(styles) > 1:
        raise ctx.error(f"datasets[{d_index}] mixes image_dir subsets (captions in files) and "
                        "metadata_file subsets (fine-tuning style)", scope, "metadata_file",
                        hint="put the two kinds in separate [[datasets]]")
    return DatasetSpec(index=d_index, subsets=subsets, origins=tuple(origins), **values)


def _check_sdxl_geometry(ctx: _Ctx, values: dict[str, Any], scope: tuple) -> None:
    steps = values["bucket_reso_steps"]
    if steps % 32:
        raise ctx.error(f"bucket_reso_steps = {steps}: SDXL needs a multiple of 32", scope, "bucket_reso_steps",
                        hint="use 64 (sd-scripts' default) or 32")
    w, h = values["resolution"]
    if w % 32 or h % 32:
        raise ctx.error(f"resolution {w}x{h}: SDXL needs width and height divisible by 32", scope,
                        "resolution", hint="e.g. 1024, [832, 1216] or [1216, 832]")
    if values["enable_bucket"]:
        lo, hi = values["min_bucket_reso"], values["max_bucket_reso"]
        if lo > hi:
            raise ctx.error(f"min_bucket_reso {lo} is larger than max_bucket_reso {hi}", scope,
                            "min_bucket_reso", hint="swap them")
        if hi < max(w, h):
            raise ctx.error(f"max_bucket_reso {hi} is smaller than the resolution {w}x{h}", scope,
                            "max_bucket_reso", hint=f"set max_bucket_reso >= {max(w, h)}")
        if lo > min(w, h):
            raise ctx.error(f"min_bucket_reso {lo} is larger than the resolution {w}x{h}", scope,
                            "min_bucket_reso", hint=f"set min_bucket_reso <= {min(w, h)}")


def parse_dataset_config(data: Mapping[str, Any], *, text: str = "", path: str = "<dataset config>",
                         base_dir: Path | None = None, is_json: bool = False,
                         default_batch_size: int | None = None,
                         run_defaults: Mapping[str, Any] | None = None) -> DatasetConfig:
    """Validate a parsed dataset config. `run_defaults` are the run config's values for
    dataset/subset keys (origin "run config"); `default_batch_size` is `train_batch_size`."""
    ctx = _Ctx(text, path, is_json)
    defaults = dict(run_defaults or {})
    if default_batch_size is not None:
        defaults["batch_size"] = default_batch_size
    for key in defaults:
        if key not in DATASET_KEYS and key not in SUBSET_KEYS:
            raise ConfigError(f"unknown dataset default '{key}'", key=key, hint=nearest(key, GENERAL_VALID))
    _check_keys(ctx, data, ["general", "datasets"], ("top",))
    general = _table(ctx, data.get("general", {}), ("top",), "general", "[general]")
    _check_keys(ctx, general, GENERAL_VALID, ("general",))
    raw_datasets = data.get("datasets", [])
    if not isinstance(raw_datasets, list) or not raw_datasets:
        raise ctx.error("no [[datasets]] in the dataset config", ("top",), "datasets",
                        hint="add [[datasets]] with resolution and a [[datasets.subsets]] table")
    base = base_dir if base_dir is not None else Path.cwd()
    notes: list[str] = []
    datasets = []
    subset_count = 0
    for i, raw in enumerate(raw_datasets):
        spec = _parse_dataset(ctx, _table(ctx, raw, ("dataset", i), "datasets", "[[datasets]]"), i,
                              subset_count, general, defaults, base, notes)
        subset_count += len(spec.subsets)
        datasets.append(spec)
    return DatasetConfig(path=Path(path) if path != "<dataset config>" else None,
                         datasets=tuple(datasets), notes=tuple(notes))


def load_dataset_config(path: str | Path, *, default_batch_size: int | None = None,
                        run_defaults: Mapping[str, Any] | None = None) -> DatasetConfig:
    """Read an sd-scripts dataset TOML (or .json). Relative paths in it resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"dataset config not found: {p}", path=str(p), key="dataset_config",
                          hint="check [dataset] dataset_config (relative paths start at the run config's folder)")
    from engine.config.toml_text import check_path_strings, read_config_text

    text = read_config_text(p, "dataset config")
    is_json = p.suffix.lower() == ".json"
    data = _parse_json(text, str(p)) if is_json else _parse_toml(text, str(p))
    check_path_strings(data, str(p))
    return parse_dataset_config(data, text=text, path=str(p), base_dir=p.resolve().parent, is_json=is_json,
                                default_batch_size=default_batch_size, run_defaults=run_defaults)


def parse_dataset_toml(text: str, *, base_dir: Path, default_batch_size: int | None = None,
                       path: str = "<dataset config>") -> DatasetConfig:
    """A dataset TOML held in memory (the wizard's draft): parsed and validated as
    `load_dataset_config` does a file; relative paths resolve against `base_dir`. Raises ConfigError."""
    return parse_dataset_config(_parse_toml(text, path), text=text, path=path, base_dir=Path(base_dir),
                                default_batch_size=default_batch_size)


def load_run_dataset_config(cfg: RunConfig, base_dir: Path | str | None = None) -> DatasetConfig:
    """The dataset config `cfg` names (relative to `base_dir`, the run config's folder), with
    `train_batch_size` as the default batch size. Raises ConfigError (missing, malformed, unknown key)."""
    return load_dataset_config(resolve_dataset_config_path(cfg, base_dir),
                               default_batch_size=cfg.training.train_batch_size)


def _parse_toml(text: str, path: str) -> dict[str, Any]:
    from engine.config.toml_text import parse_toml

    return parse_toml(text, path).unwrap()


def _parse_json(text: str, path: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", path=path,
                          line=exc.lineno, hint="fix the syntax there") from None
    if not isinstance(data, dict):
        raise ConfigError("the dataset JSON must be an object with \"datasets\"", path=path)
    return data


def resolve_dataset_config_path(cfg: RunConfig, base_dir: Path | str | None) -> Path:
    """The dataset TOML path of a run config, relative paths joined to `base_dir`. Raises ConfigError when
    dataset_config is empty."""
    raw = cfg.dataset.dataset_config
    if not raw:
        raise ConfigError("no dataset config: [dataset] dataset_config is empty", key="dataset.dataset_config",
                          hint="point it at an sd-scripts dataset TOML (resolution, [[datasets.subsets]] image_dir)")
    p = Path(raw).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p
