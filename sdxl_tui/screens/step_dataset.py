"""Step 2 · Dataset: an sd-scripts dataset TOML, or one built here from image folders.

A built dataset is kept in the draft (`DatasetDraft`) and written as `<config>.dataset.toml`
next to the run config on save. The info panel shows what the planner finds: images and
captions per subset, problems, the bucket histogram and steps per epoch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from textual.widgets import Button, Checkbox, Input, Static

from sdxl_tui.screens.step_base import StepScreen, escape
from sdxl_tui.widgets.fields import ConfigField, LabelledRow, plain_input, switch_label
from sdxl_tui.wizard_state import DatasetDraft, DatasetSubsetDraft

BUILDER_INPUTS = ("ds-image-dir", "ds-repeats", "ds-caption-ext", "ds-class-tokens", "ds-resolution", "ds-batch")


def display_path(path, base: Path) -> str:
    """A path relative to the draft's folder when it lies inside it (shorter, and stable)."""
    try:
        return str(Path(path).relative_to(base.resolve()))
    except ValueError:
        return str(path)


def plan_text(outcome, base: Path) -> str:
    """The planner's findings for the dataset step, as markup."""
    if outcome is None:
        return "[dim]planning…[/]"
    if outcome.error:
        return f"[yellow]{escape(outcome.error)}[/]"
    plan = outcome.plan
    lines = []
    for stats in plan.subsets:
        captions = stats.images - stats.missing_captions
        lines.append(f"subset {stats.subset_index}: [b]{stats.images}[/] images × {stats.num_repeats}, "
                     f"{captions} captions{' (reg)' if stats.is_reg else ''}")
        lines.append(f"  [dim]{escape(display_path(stats.source, base))}[/]")
    lines.append(f"steps per epoch: [b]{plan.steps_per_epoch}[/] ({plan.batches_per_epoch} batches)")
    if plan.buckets:
        widest = max(b.images for b in plan.buckets)
        lines.append("buckets (images per epoch):")
        for b in plan.buckets[:8]:
            bar = "█" * max(1, round(16 * b.images / widest))
            lines.append(f"  {b.bucket[0]:>4}×{b.bucket[1]:<4} {b.images:>5} {bar}")
        if len(plan.buckets) > 8:
            lines.append(f"  … {len(plan.buckets) - 8} more")
    lines += [f"[red]✗[/] {escape(p)}" for p in plan.problems]
    lines += [f"[yellow]![/] {escape(w)}" for w in plan.warnings[:5]]
    return "\n".join(lines)


class DatasetStep(StepScreen):
    """Step 2: a dataset TOML to use, or one built from image folders (repeats, class tokens, resolution, buckets)."""
    STEP = 2
    NEEDS_PLAN = True

    def __init__(self) -> None:
        super().__init__()
        self.extra_subsets: tuple[DatasetSubsetDraft, ...] = ()
        self.folder_subsets: tuple[DatasetSubsetDraft, ...] = ()  # from a `<repeats>_<tokens>` folder layout
        self.folder_note = ""

    def compose_fields(self):
        """A dataset TOML field, or the builder: image folder, repeats, class tokens, caption extension, resolution,
        batch size, buckets and added subsets."""
        blink = getattr(self.app, "cursor_blink", True)
        draft: Optional[DatasetDraft] = self.wizard.state.dataset_draft
        first = draft.subsets[-1] if draft and draft.subsets else DatasetSubsetDraft(image_dir="")
        if draft:
            self.extra_subsets = draft.subsets[:-1]
        d = draft or DatasetDraft()
        yield ConfigField("dataset_config", label="Dataset TOML", path=True)
        yield Static("[b]…or build one from an image folder[/b] (written next to the run config)",
                     classes="subheading")
        yield LabelledRow("Image folder", plain_input(first.image_dir, id="ds-image-dir", path=True, blink=blink,
                                                      placeholder="path/to/images"),
                          "Folder of images with same-named caption files (a.png + a.txt).", id="row-image-dir")
        yield LabelledRow("Repeats", plain_input(str(first.num_repeats), id="ds-repeats", blink=blink),
                          "num_repeats: how often each image is seen per epoch.", id="row-repeats")
        yield LabelledRow("Caption extension", plain_input(first.caption_extension, id="ds-caption-ext", blink=blink),
                          "caption_extension: the caption files' suffix.", id="row-caption-ext")
        yield LabelledRow("Class tokens", plain_input(first.class_tokens, id="ds-class-tokens", blink=blink,
                                                      placeholder="e.g. sks dog"),
                          "class_tokens: caption for images without a caption file.", id="row-class-tokens")
        yield LabelledRow("Resolution", plain_input(str(d.resolution), id="ds-resolution", blink=blink),
                          "resolution: training side length in pixels (1024 for SDXL; a multiple of 32).",
                          id="row-resolution")
        yield LabelledRow("Batch size", plain_input(str(d.batch_size), id="ds-batch", blink=blink),
                          "batch_size: images per batch for this dataset.", id="row-batch")
        yield LabelledRow("Aspect buckets", Checkbox(switch_label(d.enable_bucket), value=d.enable_bucket,
                                                     id="ds-buckets", compact=True),
                          "enable_bucket: group images by aspect ratio instead of cropping square.",
                          id="row-buckets")
        yield Button("Add another subset", id="ds-add-subset", compact=True)
        yield Static("", id="ds-subsets")

    def compose_info(self):
        """What the plan finds in the dataset."""
        yield Static("[b]What the plan finds[/b]", classes="info-title")
        yield Static("", id="dataset-plan")

    def refresh_info(self) -> None:
        """The plan's dataset summary, and the subsets added so far."""
        base = self.wizard.state.base_dir
        self.query_one("#dataset-plan", Static).update(plan_text(self.current_plan, base))
        listed = [f"subset: {escape(display_path(s.image_dir, base))} × {s.num_repeats}"
                  + (f", class tokens {escape(s.class_tokens)!r}" if s.class_tokens else "")
                  for s in self.extra_subsets + self.folder_subsets]
        note = [self.folder_note] if self.folder_note else []
        self.query_one("#ds-subsets", Static).update("\n".join(note + listed))

    # -- the builder -------------------------------------------------------------------------
    def _int(self, input_id: str, row_id: str, minimum: int, multiple: int = 1) -> Optional[int]:
        text = self.query_one(f"#{input_id}", Input).value.strip()
        row = self.query_one(f"#{row_id}", LabelledRow)
        try:
            value = int(text)
        except ValueError:
            row.set_error("enter a whole number")
            return None
        if value < minimum or value % multiple:
            row.set_error(f"must be at least {minimum}" + (f" and a multiple of {multiple}" if multiple > 1 else ""))
            return None
        row.set_error("")
        return value

    def _current_subset(self) -> Optional[DatasetSubsetDraft]:
        folder = self.query_one("#ds-image-dir", Input).value.strip()
        row = self.query_one("#row-image-dir", LabelledRow)
        if not folder:
            row.set_error("")
            return None
        path = Path(folder).expanduser()
        if not path.is_absolute():
            path = self.wizard.state.base_dir / path
        row.set_error("" if path.is_dir() else "no such folder")
        repeats = self._int("ds-repeats", "row-repeats", 1)
        ext = self.query_one("#ds-caption-ext", Input).value.strip() or ".txt"
        return DatasetSubsetDraft(image_dir=str(path.resolve()), num_repeats=repeats or 1,
                                  class_tokens=self.query_one("#ds-class-tokens", Input).value.strip(),
                                  caption_extension=ext if ext.startswith(".") else "." + ext)

    def _folder_subsets(self, current: Optional[DatasetSubsetDraft]) -> Optional[tuple[DatasetSubsetDraft, ...]]:
        """sd-scripts' folder layout (`20_ohwx woman` subfolders): one subset per subfolder, its
        repeats and class tokens from the name (the Repeats / Class tokens inputs then do not apply)."""
        from engine.data.folder_dataset import looks_like_folder_dataset, scan_folder_dataset
        from engine.errors import ConfigError

        self.folder_note = ""
        if current is None or not looks_like_folder_dataset(Path(current.image_dir)):
            return None
        try:
            found = scan_folder_dataset(current.image_dir)
        except ConfigError as exc:
            self.query_one("#row-image-dir", LabelledRow).set_error(exc.message)
            return None
        self.folder_note = "\n".join(
            [f"sd-scripts folder layout: {len(found.subsets)} subsets from its <repeats>_<class tokens> subfolders "
             "(their names give repeats and class tokens)"] + [f"[yellow]![/] {escape(w)}" for w in found.warnings])
        return tuple(DatasetSubsetDraft(image_dir=str(sub.image_dir), num_repeats=sub.num_repeats,
                                        class_tokens=sub.class_tokens, caption_extension=current.caption_extension)
                     for sub in found.subsets)

    def rebuild_draft(self) -> None:
        """Rebuild the draft's dataset from the builder's inputs (a `<repeats>_<tokens>` folder layout gives one
        subset a folder); a built dataset replaces a named dataset_config."""
        state = self.wizard.state
        current = self._current_subset()
        folder = self._folder_subsets(current)
        subsets = self.extra_subsets + (folder if folder is not None else ((current,) if current else ()))
        self.folder_subsets = folder or ()
        resolution = self._int("ds-resolution", "row-resolution", 64, 32)
        batch = self._int("ds-batch", "row-batch", 1)
        if not subsets:
            state.dataset_draft = None
        else:
            state.dataset_draft = DatasetDraft(
                subsets=subsets, resolution=resolution or 1024, batch_size=batch or 1,
                enable_bucket=self.query_one("#ds-buckets", Checkbox).value)
            if state.cfg.dataset.dataset_config:
                state.set_many(dataset_config="")  # the built dataset replaces a named TOML
                self.query_one("#field-dataset_config", ConfigField).reload()
        self.refresh_everything()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Rebuild the dataset as a builder input changes."""
        if event.input.id in BUILDER_INPUTS:
            self.rebuild_draft()

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        """Rebuild the dataset when bucketing is switched."""
        if event.checkbox.id == "ds-buckets":
            event.checkbox.label = switch_label(event.value)
            self.rebuild_draft()

    def on_config_field_edited(self, event: ConfigField.Edited) -> None:
        """Naming a dataset TOML drops the built dataset and the builder's subsets."""
        if event.key == "dataset_config" and self.wizard.state.cfg.dataset.dataset_config:
            self.wizard.state.dataset_draft = None
            self.extra_subsets = ()
            self.query_one("#ds-image-dir", Input).value = ""
        super().on_config_field_edited(event)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """"Add subset": keep the current folder as a subset and clear the inputs for the next one."""
        if event.button.id == "ds-add-subset":
            event.stop()
            current = self._current_subset()
            if current is not None:
                self.extra_subsets += self._folder_subsets(current) or (current,)
                self.folder_subsets = ()
                self.query_one("#ds-image-dir", Input).value = ""
                self.query_one("#ds-class-tokens", Input).value = ""
                self.query_one("#ds-image-dir", Input).focus()
            return
        super().on_button_pressed(event)


SCREEN = DatasetStep
