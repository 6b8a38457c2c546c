"""A labelled form field bound to one config option.

The label is the sd-scripts option name (what users search for), the help line is the
option's description from `engine.config.schema` (the same text `sdxl-tui options` prints and the
saved TOML carries as a comment), and every edit is validated by `RunConfig.with_values`
on the spot: a refused value shows the pydantic message under the field and leaves the
draft unchanged. Rule fixes the edit triggered (engine.config.rules) are shown the same way.
"""
from __future__ import annotations

import typing
from typing import Any, Literal, Optional

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

from engine.config.schema import SECTIONS, help_for, locate
from sdxl_tui.widgets.path_suggester import PathSuggester
from sdxl_tui.wizard_app import Wizard, wizard_of


def field_kind(section: str, key: str) -> tuple[str, tuple[Any, ...]]:
    """("bool" | "choice" | "list" | "int" | "float" | "str", choices) for an option."""
    annotation = SECTIONS[section].model_fields[key].annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union:  # Optional[X]
        annotation = next(a for a in args if a is not type(None))
        args = typing.get_args(annotation)
    if annotation is bool:
        return "bool", ()
    if typing.get_origin(annotation) is Literal:
        return "choice", args
    if typing.get_origin(annotation) is list:
        return "list", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    return "str", ()


def is_optional(section: str, key: str) -> bool:
    """True when the option may be unset (its annotation allows None)."""
    annotation = SECTIONS[section].model_fields[key].annotation
    return type(None) in typing.get_args(annotation)


def format_value(kind: str, value: Any) -> str:
    """`value` as an editor shows it: "" for unset, lists comma-separated, floats in %g."""
    if value is None:
        return ""
    if kind == "list":
        return ", ".join(value)
    if kind == "float":
        return f"{value:g}"
    return str(value)


def parse_text(kind: str, text: str, optional: bool) -> Any:
    """Input text -> option value; ValueError with a message a person understands."""
    text = text.strip()
    if kind == "list":
        return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if text == "" and optional:
        return None
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ValueError("enter a whole number" + (" (or leave empty for unset)" if optional else "")) from None
    if kind == "float":
        try:
            return float(text)
        except ValueError:
            unset = " (or leave empty for unset)" if optional else ""
            raise ValueError(f"enter a number such as 1e-4{unset}") from None
    return text


def switch_label(on: bool) -> str:
    """"on" or "off", said next to a checkbox."""
    # Said in words: the box's colour alone does not survive every terminal palette.
    return "on" if on else "off"


class ConfigField(Widget):
    """One option: label, editor, help line, and a line for errors or applied rule fixes."""

    DEFAULT_CSS = """
    ConfigField { height: auto; margin: 0 0 1 0; }
    ConfigField > Horizontal { height: auto; }
    ConfigField .field-label { width: 26; padding: 0 1 0 0; }
    ConfigField .field-editor { width: 1fr; }
    ConfigField .field-help { color: $text-muted; padding: 0 0 0 2; }
    ConfigField .field-error { color: $error; padding: 0 0 0 2; display: none; }
    ConfigField .field-note { color: $warning; padding: 0 0 0 2; display: none; }
    ConfigField.-invalid .field-error { display: block; }
    ConfigField.-noted .field-note { display: block; }
    """

    @property
    def wizard(self) -> Wizard:
        """The app, typed (sdxl_tui.wizard_app)."""
        return wizard_of(self)

    class Edited(Message):
        """An option changed in the draft (posted after the draft accepted it)."""

        def __init__(self, field: "ConfigField", key: str, notes: tuple[str, ...]) -> None:
            super().__init__()
            self.field = field
            self.key = key
            self.notes = notes

    def __init__(self, key: str, *, label: str = "", path: bool = False, help_text: str = "",
                 id: Optional[str] = None, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(id=id or f"field-{key}")
        self.section, self.key = locate(key)
        self.kind, self.choices = field_kind(self.section, self.key)
        self.optional = is_optional(self.section, self.key)
        self.label_text = label or self.key
        self.help_text = help_text or help_for(self.section, self.key)
        self.path = path
        self.suggestions = suggestions  # completions offered while typing (any case)

    # -- building ----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        """Label and editor on one row; help, error and note lines under them."""
        with Horizontal():
            yield Label(self.label_text, classes="field-label")
            yield self._make_editor()
        yield Static(self.help_text, classes="field-help", markup=False)
        yield Static("", classes="field-error", markup=False)
        yield Static("", classes="field-note", markup=False)

    def _make_editor(self) -> Widget:
        value = self.wizard.state.value(self.key)
        editor_id = f"in-{self.key}"
        if self.kind == "bool":
            return Checkbox(switch_label(bool(value)), value=bool(value), compact=True, id=editor_id,
                            classes="field-editor")
        if self.kind == "choice":
            options = [(str(c) if c != "" else "(none)", c) for c in self.choices]
            return Select(options, value=value, allow_blank=False, compact=True, id=editor_id,
                          classes="field-editor")
        placeholder = "unset" if self.optional else ""
        if self.kind == "list":
            placeholder = "key=value, key=value"
        editor = Input(format_value(self.kind, value), placeholder=placeholder, compact=True, id=editor_id,
                       classes="field-editor", suggester=self._suggester(),
                       select_on_focus=False)
        editor.cursor_blink = getattr(self.app, "cursor_blink", True)
        return editor

    def _suggester(self):
        if self.path:
            return PathSuggester()
        if self.suggestions:
            from textual.suggester import SuggestFromList

            return SuggestFromList(self.suggestions, case_sensitive=False)
        return None

    @property
    def editor(self) -> Widget:
        """The widget that edits the value (Input, Select or Checkbox)."""
        return self.query_one(".field-editor")

    # -- syncing with the draft --------------------------------------------------------------
    def reload(self) -> None:
        """Show the draft's current value (after another step or a rule fix changed it)."""
        value = self.wizard.state.value(self.key)
        editor = self.editor
        if isinstance(editor, Checkbox):
            editor.value = bool(value)
            editor.label = switch_label(bool(value))
        elif isinstance(editor, Select):
            editor.value = value
        elif isinstance(editor, Input) and not self._parses_to(editor.value, value):
            editor.value = format_value(self.kind, value)
            self.set_error("")

    def _parses_to(self, text: str, value: Any) -> bool:
        try:
            return parse_text(self.kind, text, self.optional) == value
        except ValueError:
            return False

    def set_error(self, message: str) -> None:
        """Show `message` under the field as refused ("" clears it)."""
        self.query_one(".field-error", Static).update(f"✗ {message}" if message else "")
        self.set_class(bool(message), "-invalid")

    def set_note(self, message: str) -> None:
        """Show `message` under the field as a note, such as a rule fix ("" clears it)."""
        self.query_one(".field-note", Static).update(message)
        self.set_class(bool(message), "-noted")

    def _apply(self, value: Any) -> None:
        # Programmatic reloads echo back as Changed events: nothing to do when already equal.
        if value == self.wizard.state.value(self.key):
            self.set_error("")
            return
        edit = self.wizard.state.set(self.key, value)
        self.set_error(edit.error)
        if not edit.error:
            self.post_message(self.Edited(self, self.key, edit.notes))

    def on_input_changed(self, event: Input.Changed) -> None:
        """Parse the typed text and apply it; a value that does not parse is shown as an error and the draft is left
        unchanged."""
        event.stop()
        try:
            value = parse_text(self.kind, event.value, self.optional)
        except ValueError as exc:
            self.set_error(str(exc))
            return
        self._apply(value)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        """Apply the checkbox and say on/off in words."""
        event.stop()
        event.checkbox.label = switch_label(event.value)
        self._apply(event.value)

    def on_select_changed(self, event: Select.Changed) -> None:
        """Apply the chosen value (a blank choice is ignored)."""
        event.stop()
        if event.value is not Select.BLANK:
            self._apply(event.value)


class LabelledRow(Widget):
    """A label, any editor and a help line: for wizard inputs that are not config options
    (the dataset builder's folder, repeats...). Errors are set by the owning screen."""

    DEFAULT_CSS = ConfigField.DEFAULT_CSS.replace("ConfigField", "LabelledRow")

    def __init__(self, label: str, editor: Widget, help_text: str, *, id: Optional[str] = None) -> None:
        super().__init__(id=id)
        self.label_text = label
        self.editor_widget = editor
        self.help_text = help_text

    def compose(self) -> ComposeResult:
        """Label and editor on one row; help and error lines under them."""
        with Horizontal():
            yield Label(self.label_text, classes="field-label")
            self.editor_widget.add_class("field-editor")
            yield self.editor_widget
        yield Static(self.help_text, classes="field-help", markup=False)
        yield Static("", classes="field-error", markup=False)

    def set_error(self, message: str) -> None:
        """Show `message` under the row as refused ("" clears it)."""
        self.query_one(".field-error", Static).update(f"✗ {message}" if message else "")
        self.set_class(bool(message), "-invalid")


def plain_input(value: str = "", *, id: str, placeholder: str = "", path: bool = False, blink: bool = True) -> Input:
    """A compact Input for a value that is not a config option (with path completion when `path`)."""
    editor = Input(value, placeholder=placeholder, compact=True, id=id, select_on_focus=False,
                   suggester=PathSuggester() if path else None)
    editor.cursor_blink = blink
    return editor
