"""The draft run being edited by the wizard: a RunConfig plus the files it will write.

The config itself is frozen; every edit goes through `RunConfig.with_values`, so the wizard
validates with exactly the pydantic rules the engine loads with, and cross-option rules come
from `engine.config.rules` (the same module `sdxl-tui train` checks). Nothing touches the disk until
`save()`: a dataset TOML built from an image folder and the sample prompts are written next to
the run config then, and the config names them by paths relative to itself (relative paths in
a run config are relative to its folder).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import tomlkit
from pydantic import ValidationError

from engine.config.schema import PATH_KEYS, RunConfig, locate


@dataclass(frozen=True)
class DatasetSubsetDraft:
    """One image folder of a wizard-built dataset (sd-scripts subset keys)."""
    image_dir: str
    num_repeats: int = 1
    class_tokens: str = ""
    caption_extension: str = ".txt"
    is_reg: bool = False


@dataclass(frozen=True)
class DatasetDraft:
    """A dataset TOML the wizard builds from image folders (sd-scripts' format)."""
    subsets: tuple[DatasetSubsetDraft, ...] = ()
    resolution: int = 1024
    batch_size: int = 1
    enable_bucket: bool = True

    # Bucket range follows the resolution (1024 -> 512..2048 in steps of 64, sd-scripts' usual
    # SDXL choice); small demo resolutions get a proportional range in steps of 32.
    @property
    def bucket_reso_steps(self) -> int:
        """Bucket step in pixels: 64 from 512 up, else 32."""
        return 64 if self.resolution >= 512 else 32

    @property
    def min_bucket_reso(self) -> int:
        """Smallest bucket side in pixels: half the resolution, rounded down to the step."""
        step = self.bucket_reso_steps
        return max(step, self.resolution // 2 // step * step)

    @property
    def max_bucket_reso(self) -> int:
        """Largest bucket side in pixels: twice the resolution."""
        return self.resolution * 2

    def to_toml(self) -> str:
        """The dataset as sd-scripts dataset TOML text."""
        doc = tomlkit.document()
        doc.add(tomlkit.comment("sd-scripts dataset config written by the sdxl-tui wizard."))
        general = tomlkit.table()
        general.add("enable_bucket", self.enable_bucket)
        doc.add("general", general)
        dataset = tomlkit.table()
        dataset.add("resolution", self.resolution)
        dataset.add("batch_size", self.batch_size)
        if self.enable_bucket:
            dataset.add("min_bucket_reso", self.min_bucket_reso)
            dataset.add("max_bucket_reso", self.max_bucket_reso)
            dataset.add("bucket_reso_steps", self.bucket_reso_steps)
        subsets = tomlkit.aot()
        for sub in self.subsets:
            table = tomlkit.table()
            table.add("image_dir", sub.image_dir)
            table.add("num_repeats", sub.num_repeats)
            table.add("caption_extension", sub.caption_extension)
            if sub.class_tokens:
                table.add("class_tokens", sub.class_tokens)
            if sub.is_reg:
                table.add("is_reg", True)
            subsets.append(table)
        dataset.add("subsets", subsets)
        datasets = tomlkit.aot()
        datasets.append(dataset)
        doc.add("datasets", datasets)
        return tomlkit.dumps(doc)

    def parsed(self, base_dir: Path, default_batch_size: int) -> Any:
        """The draft as the engine reads a dataset TOML (engine.data.dataset_config.DatasetConfig),
        held in memory; image folders resolve against `base_dir`. Raises ConfigError."""
        from engine.data.dataset_config import parse_dataset_toml

        return parse_dataset_toml(self.to_toml(), base_dir=base_dir, default_batch_size=default_batch_size,
                                  path=DRAFT_LABEL)


DRAFT_LABEL = "(the wizard's dataset draft)"


@dataclass(frozen=True)
class Edit:
    """What one change did: the error that refused it, or the rule fixes applied with it."""
    error: str = ""
    notes: tuple[str, ...] = ()


def validation_message(exc: ValidationError) -> str:
    """The first pydantic error's message, without pydantic's "Value error, " prefix."""
    first = exc.errors()[0]
    return str(first["msg"]).removeprefix("Value error, ")


def absolutize_paths(cfg: RunConfig, base_dir: Path) -> RunConfig:
    """Relative paths resolved against `base_dir` where something exists there: a config opened
    from another folder (a template) still points at the same places once saved elsewhere."""
    changes: dict[str, Any] = {}
    for key in PATH_KEYS:
        section, name = locate(key)
        value = getattr(getattr(cfg, section), name)
        if value and not Path(value).is_absolute() and (base_dir / value).exists():
            changes[key] = str((base_dir / value).resolve())
    return cfg.with_values(**changes) if changes else cfg


@dataclass
class WizardState:
    """The draft run the wizard edits: the config, where it is saved, and the dataset and prompts written next to it."""
    cfg: RunConfig = field(default_factory=RunConfig)
    config_path: Optional[Path] = None  # where it was opened from / will be saved
    base_doc: Optional[tomlkit.TOMLDocument] = None  # the opened file, so its comments survive
    dataset_draft: Optional[DatasetDraft] = None  # written next to the config on save
    prompts_text: Optional[str] = None  # written next to the config on save
    source_note: str = ""  # how this draft began (template, file, import)
    import_notes: tuple[str, ...] = ()  # what an sd-scripts import converted or dropped
    plan: Optional[Any] = None  # latest PlanOutcome for this draft (sdxl_tui.planning)

    @property
    def base_dir(self) -> Path:
        """Where relative paths in the draft point from."""
        return self.config_path.parent if self.config_path is not None else Path.cwd()

    @property
    def dataset_toml(self) -> Optional[str]:
        """The built dataset as TOML text, or None when the draft names a dataset TOML instead."""
        return self.dataset_draft.to_toml() if self.dataset_draft is not None else None

    # -- editing -----------------------------------------------------------------------------
    def value(self, key: str) -> Any:
        """The draft's value of option `key` (its sd-scripts name or section.name)."""
        section, name = locate(key)
        return getattr(getattr(self.cfg, section), name)

    def set(self, key: str, value: Any) -> Edit:
        """Change one option; refused with the pydantic message, or applied with rule fixes."""
        try:
            candidate = self.cfg.with_values(**{key: value})
        except ValidationError as exc:
            return Edit(error=validation_message(exc))
        candidate, notes = apply_rule_fixes(candidate, changed=key)
        self.cfg = candidate
        return Edit(notes=notes)

    def set_many(self, **values: Any) -> Edit:
        """Change several options at once without rule fixes; refused as a whole with the pydantic message."""
        try:
            self.cfg = self.cfg.with_values(**values)
        except ValidationError as exc:
            return Edit(error=validation_message(exc))
        return Edit()

    # -- checks ------------------------------------------------------------------------------
    def issues(self) -> list[Any]:
        """Rule issues of the config as it will be saved, its dataset draft checked in memory."""
        from engine.config.rules import ERROR, RuleIssue, check_rules
        from engine.errors import ConfigError

        cfg = self.final_config(self.config_path or self.base_dir / "sdxl-tui.toml")
        if self.dataset_draft is None:
            return check_rules(cfg)
        try:
            draft = self.dataset_draft.parsed(self.base_dir, cfg.training.train_batch_size)
        except ConfigError as exc:
            return check_rules(cfg) + [RuleIssue(ERROR, ("dataset_config",), exc.message)]
        return check_rules(cfg, draft)

    # -- saving ------------------------------------------------------------------------------
    def side_files(self, config_path: Path) -> dict[str, Path]:
        """The files saved next to `config_path` (<stem>.dataset.toml, <stem>.prompts.txt), by the option that names
        them."""
        stem = config_path.with_suffix("")
        out: dict[str, Path] = {}
        if self.dataset_draft is not None:
            out["dataset_config"] = Path(f"{stem}.dataset.toml")
        if self.prompts_text is not None:
            out["sample_prompts"] = Path(f"{stem}.prompts.txt")
        return out

    def final_config(self, config_path: Path) -> RunConfig:
        """The config as it will be saved at `config_path` (side files named relative to it)."""
        changes = {key: path.name for key, path in self.side_files(config_path).items()}
        if self.prompts_text is not None and not self.prompts_text.strip():
            changes["sample_prompts"] = ""
        return self.cfg.with_values(**changes) if changes else self.cfg

    def toml_text(self, config_path: Path) -> str:
        """The config TOML as it will be saved at `config_path` (comments of the opened file kept)."""
        from engine.config.toml_file import dumps_config

        return dumps_config(self.final_config(config_path), _copy_doc(self.base_doc))

    def save(self, config_path: Path) -> RunConfig:
        """Write the config and its side files atomically; returns the config as saved. Raises OSError when a file
        cannot be written."""
        from engine.storage.atomic import atomic_write_text

        config_path = config_path.expanduser().resolve()
        config_path.parent.mkdir(parents=True, exist_ok=True)
        side = self.side_files(config_path)
        if "dataset_config" in side:
            atomic_write_text(side["dataset_config"], self.dataset_draft.to_toml())  # type: ignore[union-attr]
        if "sample_prompts" in side and self.prompts_text and self.prompts_text.strip():
            atomic_write_text(side["sample_prompts"], self.prompts_text.rstrip("\n") + "\n")
        final = self.final_config(config_path)
        atomic_write_text(config_path, self.toml_text(config_path))
        self.config_path = config_path
        return final


def _copy_doc(doc: Optional[tomlkit.TOMLDocument]) -> Optional[tomlkit.TOMLDocument]:
    return tomlkit.parse(tomlkit.dumps(doc)) if doc is not None else None


def apply_rule_fixes(cfg: RunConfig, changed: str) -> tuple[RunConfig, tuple[str, ...]]:
    """Apply the fixes of rule issues involving the option just changed; say why for each.

    Only issues that name `changed` are fixed, so the wizard never silently rewrites an
    option the user did not touch in this edit's context.
    """
    from engine.config.rules import check_rules

    notes: list[str] = []
    for _ in range(3):  # a fix may raise another issue; a few rounds settle it
        fixable = [i for i in check_rules(cfg) if i.fix and changed in i.keys
                   and not (len(i.fix) == 1 and changed in i.fix)]
        if not fixable:
            break
        for issue in fixable:
            try:
                cfg = cfg.with_values(**issue.fix)
            except ValidationError:
                continue
            set_text = ", ".join(f"{k} = {_toml_value(v)}" for k, v in issue.fix.items())
            notes.append(f"set {set_text}: {issue.message}")
    return cfg, tuple(notes)


def _toml_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def load_state(path: Path) -> WizardState:
    """Open a run config, or import an sd-scripts config when it is not one."""
    from engine.config.toml_file import load_config_with_document
    from engine.errors import ConfigError
    from engine.interop.any_config import is_gui_json_file

    path = path.expanduser().resolve()
    if is_gui_json_file(path):
        return import_kohya_state(path)
    try:
        cfg, doc = load_config_with_document(path)
        note = f"opened {path.name}"
    except ConfigError as first_error:
        try:
            return import_kohya_state(path)
        except ConfigError:
            raise first_error from None
    cfg = absolutize_paths(cfg, path.parent)
    return WizardState(cfg=cfg, config_path=path, base_doc=doc, source_note=note)


def import_kohya_state(path: Path) -> WizardState:
    """A new draft from an sd-scripts args TOML or kohya_ss GUI JSON (or our own config, which passes through)."""
    from engine.interop.any_config import load_any_config

    path = path.expanduser().resolve()
    cfg, notes = load_any_config(path, require_dataset=False)  # a preset's draft gets its dataset in the wizard
    cfg = absolutize_paths(cfg, path.parent)
    return WizardState(cfg=cfg, source_note=f"imported {path.name}", import_notes=tuple(str(n) for n in notes))


def template_state(path: Path) -> WizardState:
    """A new run from a template: values and comments kept, paths resolved, saved elsewhere."""
    state = load_state(path)
    state.config_path = None
    state.source_note = f"new run from template {path.stem}"
    return state
