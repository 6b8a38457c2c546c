"""Step 7 · Review: the config as it will be saved, its warnings, the sd-scripts command; save or train.

What is shown is exactly what is written (`WizardState.toml_text`), and the saved file is
the one `sdxl-tui train` replays.
"""
from __future__ import annotations

from pathlib import Path

from textual.binding import Binding
from textual.widgets import Button, Input, Static

from sdxl_tui.screens.step_base import StepScreen, escape
from sdxl_tui.widgets.fields import LabelledRow, plain_input


def default_config_path(app) -> Path:
    """Where the draft is saved by default: where it was opened from, else <save_dir>/<output_name>.toml."""
    state = app.state
    if state.config_path is not None:
        return state.config_path
    return Path(app.save_dir) / f"{state.cfg.saving.output_name or 'run'}.toml"


def paths_from_working_dir(cfg, config_path: Path):
    """sd-scripts reads relative paths from its working directory, not from the config's folder:
    resolve them, then write the ones inside the working directory relative to it (shorter)."""
    from engine.config.schema import PATH_KEYS, locate, resolve_relative_paths

    cfg = resolve_relative_paths(cfg, config_path.parent)
    cwd = Path.cwd().resolve()
    changes = {}
    for key in PATH_KEYS:
        section, name = locate(key)
        value = getattr(getattr(cfg, section), name)
        if value and Path(value).is_absolute() and Path(value).is_relative_to(cwd):
            changes[key] = str(Path(value).relative_to(cwd))
    return cfg.with_values(**changes) if changes else cfg


def kohya_command(cfg, config_path: Path) -> str:
    """The equivalent sd-scripts command line."""
    from engine.interop.kohya_export import command_line

    try:
        return command_line(paths_from_working_dir(cfg, config_path))
    except Exception as exc:  # the export is informative only; saving must still work
        return f"(could not build the sd-scripts command: {exc})"


class ReviewStep(StepScreen):
    """Step 7: the config as it will be saved, its issues, the sd-scripts command; save, or save and train."""
    STEP = 7
    BINDINGS = [
        Binding("ctrl+s", "save", "Save", id="review.save", priority=True),
        Binding("ctrl+t", "save_and_train", "Save & Train", id="review.train", priority=True),
    ]

    def compose_fields(self):
        """The "Save as" path, what was saved, the issues, and the config TOML as it will be written."""
        blink = getattr(self.app, "cursor_blink", True)
        yield LabelledRow("Save as", plain_input(str(default_config_path(self.app)), id="review-path", path=True,
                                                 blink=blink),
                          "The run config; dataset TOML and prompts (if built here) go next to it.",
                          id="row-review-path")
        yield Static("", id="review-saved")
        yield Static("", id="review-warnings")
        yield Static("[b]Config[/b]", classes="subheading")
        yield Static("", id="review-toml", markup=False)
        yield Static("[b]Equivalent sd-scripts command[/b]", classes="subheading")
        yield Static("", id="review-kohya", markup=False)

    def compose_info(self):
        """The keys to save or train, and buttons for both."""
        yield Static("[b]Ready?[/b]", classes="info-title")
        yield Static("Ctrl+S saves the config.\nCtrl+T saves it and starts training with the live dashboard.\n"
                     "The same file replays headless:\n  sdxl-tui train FILE", id="review-help")
        yield Button("Save", id="review-save-btn", compact=True)
        yield Button("Save & Train", id="review-train-btn", compact=True, variant="success")

    @property
    def config_path(self) -> Path:
        """The path typed in "Save as", relative to the app's save_dir (run.toml when empty)."""
        text = self.query_one("#review-path", Input).value.strip()
        path = Path(text or "run.toml").expanduser()
        return path if path.is_absolute() else Path(self.wizard.save_dir) / path

    def field_keys(self) -> set[str]:
        """Every option: the review shows all issues."""
        from engine.config.schema import option_index

        return set(option_index())

    def refresh_issues(self) -> None:
        """Show every issue of the draft (not only this step's) and the notes from an sd-scripts import."""
        issues = self.wizard.state.issues()
        errors = [i for i in issues if i.level == "error"]
        lines = [("[red]✗[/] " if i.level == "error" else "[yellow]![/] ") + escape(i.message) for i in issues]
        header = ("[red]Fix these before training:[/]" if errors else
                  "[green]✓ no conflicts[/]" if not issues else "[yellow]Warnings:[/]")
        notes = self.wizard.state.import_notes
        if notes:
            lines += ["[b]From the sd-scripts import:[/b]", *(escape(n) for n in notes)]
        self.query_one("#review-warnings", Static).update("\n".join([header, *lines]))
        self.query_one("#step-issues", Static).update("")

    def refresh_info(self) -> None:
        """Show the config TOML as it will be saved at the typed path (or why it cannot be rendered)."""
        state = self.wizard.state
        path = self.config_path
        try:
            text = state.toml_text(path)
        except Exception as exc:
            text = f"(cannot render the config: {exc})"
        self.query_one("#review-toml", Static).update(text)
        self.query_one("#review-kohya", Static).update(kohya_command(state.final_config(path), path))

    def on_input_changed(self, event: Input.Changed) -> None:
        """Redraw the TOML when the path changes (relative paths in it depend on it)."""
        if event.input.id == "review-path":
            self.refresh_info()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """The Save and Save & Train buttons; others (Back/Next) as every step."""
        if event.button.id == "review-save-btn":
            event.stop()
            self.action_save()
        elif event.button.id == "review-train-btn":
            event.stop()
            self.action_save_and_train()
        else:
            super().on_button_pressed(event)

    def action_save(self) -> Path | None:
        """Ctrl+S: save the config and its side files; returns the path, or None when saving failed (the error is
        shown under the path)."""
        from engine.errors import SdxlTuiError

        path = self.config_path
        try:
            self.wizard.state.save(path)
        except (SdxlTuiError, OSError) as exc:
            self.query_one("#row-review-path", LabelledRow).set_error(str(exc))
            return None
        self.query_one("#row-review-path", LabelledRow).set_error("")
        self.query_one("#review-saved", Static).update(f"[green]✓ saved[/] {escape(str(path))}")
        self.notify(f"saved {path}", timeout=3)
        return path

    def action_save_and_train(self) -> None:
        """Ctrl+T: save, then train with the live dashboard; refused while the draft has errors."""
        issues = self.wizard.state.issues()
        if any(i.level == "error" for i in issues):
            self.notify("fix the errors listed under Save as first", severity="error", timeout=5)
            return
        path = self.action_save()
        if path is not None:
            self.wizard.start_training(path)

    def action_next_step(self) -> None:
        """Next on the last step means Save & Train."""
        self.action_save_and_train()


SCREEN = ReviewStep
