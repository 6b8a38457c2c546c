"""Small modal screens the dashboard opens: a yes/no question and the read-only config."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static, TextArea

MODAL_CSS = """
ConfirmScreen, ConfigScreen { align: center middle; }
ConfirmScreen > Vertical {
    width: 64; height: auto; border: thick $warning; background: $surface; padding: 1 2;
}
ConfirmScreen .keys { color: $text-muted; margin-top: 1; }
ConfigScreen > Vertical { width: 90%; height: 85%; border: thick $primary; background: $surface; }
ConfigScreen TextArea { height: 1fr; }
"""


class ConfirmScreen(ModalScreen[bool]):
    """`y` answers yes; `n` or escape answers no."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, yes: str, no: str) -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        """The question and its y/n keys."""
        with Vertical():
            yield Static(self.question)
            yield Static(f"[b]y[/b] {self.yes}    [b]n[/b] {self.no}", classes="keys")

    def action_answer(self, answer: bool) -> None:
        """Dismiss with the answer (y: True, n or Esc: False)."""
        self.dismiss(answer)


class ConfigScreen(ModalScreen[None]):
    """The run's config TOML, read-only (changing a running run's config is not possible)."""

    DEFAULT_CSS = MODAL_CSS
    BINDINGS = [Binding("escape,c,q", "close", "Close", id="config.close")]

    def __init__(self, text: str, title: str) -> None:
        super().__init__()
        self.text, self.title_text = text, title

    def compose(self) -> ComposeResult:
        """The config text, read-only with line numbers."""
        with Vertical() as box:
            box.border_title = self.title_text
            yield TextArea(self.text, read_only=True, show_line_numbers=True, id="config-text")

    def action_close(self) -> None:
        """Dismiss (nothing to return)."""
        self.dismiss(None)
