"""The first screen: begin a run from a template, a saved config, an sd-scripts config, or a recent run.

It reads only small text files (template headers, the recent-runs list), so it paints
before anything heavy is imported.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from sdxl_tui.recent_runs import RecentRun, load_recent
from sdxl_tui.widgets.path_suggester import PathSuggester
from sdxl_tui.wizard_app import Wizard, wizard_of

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"  # package data: in the wheel too


@dataclass(frozen=True)
class Template:
    """A template TOML and the summary from its first comment line."""
    path: Path
    summary: str

    @property
    def name(self) -> str:
        """The file's stem (12gb, cpu-demo, ...)."""
        return self.path.stem


def list_templates(folder: Path = TEMPLATES_DIR) -> list[Template]:
    """Templates in a sensible order (smallest card first, the CPU demo last)."""
    found = []
    for path in folder.glob("*.toml"):
        summary = ""
        try:
            with path.open(encoding="utf-8") as handle:
                first = handle.readline().strip()
            summary = first.removeprefix("#").strip().removeprefix("Template:").strip()
        except OSError:
            continue
        found.append(Template(path, summary))

    def order(t: Template) -> tuple[int, str]:
        digits = "".join(ch for ch in t.name if ch.isdigit())
        return (int(digits) if digits else 10_000, t.name)

    return sorted(found, key=order)


class PathPrompt(ModalScreen[Optional[Path]]):
    """Ask for a file path (with filesystem completion); dismisses with the path or None."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, title: str, placeholder: str = "path/to/file.toml") -> None:
        super().__init__()
        self.prompt_title = title
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        """Title, a path input with completion, and the keys."""
        with Vertical(id="prompt-box"):
            yield Label(self.prompt_title, id="prompt-title")
            editor = Input(placeholder=self.placeholder, suggester=PathSuggester(), id="prompt-input", compact=True)
            editor.cursor_blink = getattr(self.app, "cursor_blink", True)
            yield editor
            yield Static("Enter opens · → completes the path · Esc cancels", id="prompt-help")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Dismiss with the typed path (~ expanded), or None when empty."""
        text = event.value.strip()
        self.dismiss(Path(text).expanduser() if text else None)

    def action_cancel(self) -> None:
        """Dismiss with None."""
        self.dismiss(None)


class StartScreen(Screen):
    """Choose how the draft begins."""

    BINDINGS = [
        Binding("o", "open_config", "Open config", id="start.open"),
        Binding("i", "import_kohya", "Import sd-scripts", id="start.import"),
        Binding("w", "watch_run", "Watch run", id="start.watch"),
        Binding("ctrl+q", "app.quit", "Quit", id="start.quit"),
    ]

    @property
    def wizard(self) -> Wizard:
        """The app, typed (sdxl_tui.wizard_app)."""
        return wizard_of(self)

    def compose(self) -> ComposeResult:
        """Title, the ways to begin (templates, defaults, open, import, recent runs) and a message line."""
        with Vertical(id="start-box"):
            yield Static("[b]sdxl-tui[/b] · train an SDXL LoRA", id="start-title")
            yield Static("Pick how to begin. ↑/↓ moves, Enter chooses.", id="start-help")
            yield OptionList(*self._options(), id="start-options")
            yield Static("", id="start-message")
        yield Footer()

    def _options(self) -> list[Option | None]:
        options: list[Option | None] = []
        for template in list_templates():
            options.append(Option(f"New run · {template.name:<8} {template.summary}", id=f"template:{template.path}"))
        options.append(Option("New run · defaults built-in defaults (fill in every step)", id="defaults:"))
        options.append(None)
        options.append(Option("Open a saved run config…", id="open:"))
        options.append(Option("Import an sd-scripts config (args TOML or JSON)…", id="import:"))
        recent = load_recent()
        if recent:
            options.append(None)
            for run in recent:
                options.append(Option(f"Recent · {run.output_dir}  (Enter: its config · w: its dashboard)",
                                      id=f"recent:{run.output_dir}"))
        return options

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        """Begin the draft the chosen option names (template, defaults, a recent run's config) or ask for a path."""
        kind, _, value = (event.option.id or "").partition(":")
        app = self.wizard
        actions: dict[str, Callable[[], None]] = {
            "template": lambda: app.open_template(Path(value)),
            "defaults": lambda: app.open_defaults(),
            "open": self.action_open_config,
            "import": self.action_import_kohya,
            "recent": lambda: app.open_recent(RecentRun(Path(value))),
        }
        actions[kind]()

    def action_watch_run(self) -> None:
        """Open the dashboard of the highlighted recent run (Enter opens its config instead)."""
        options = self.query_one("#start-options", OptionList)
        highlighted = options.highlighted_option
        kind, _, value = ((highlighted.id or "") if highlighted else "").partition(":")
        if kind == "recent":
            self.wizard.watch_recent(RecentRun(Path(value)))
        else:
            self.show_message("Highlight a recent run first (they are listed at the bottom).")

    def action_open_config(self) -> None:
        """Ask for a saved run config's path, then open it."""
        self.app.push_screen(PathPrompt("Open a saved run config"), self._opened)

    def action_import_kohya(self) -> None:
        """Ask for an sd-scripts args TOML or kohya_ss GUI JSON path, then import it."""
        self.app.push_screen(PathPrompt("Import an sd-scripts config (--config_file TOML or kohya_ss GUI JSON)",
                                        "path/to/config.toml or .json"), self._imported)

    def _opened(self, path: Optional[Path]) -> None:
        if path is not None:
            self.wizard.open_config(path)

    def _imported(self, path: Optional[Path]) -> None:
        if path is not None:
            self.wizard.open_config(path, kohya=True)

    def show_message(self, text: str) -> None:
        """Show `text` under the options."""
        self.query_one("#start-message", Static).update(text)
