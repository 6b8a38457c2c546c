"""The typed way from a wizard screen or widget to its app: `wizard_of(self).state` instead of
`self.app.state  # type: ignore` (Textual types `self.app` as a plain App)."""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from textual.dom import DOMNode

    from sdxl_tui.app import WizardApp


def wizard_of(node: DOMNode) -> WizardApp:
    """The WizardApp `node` runs in (every wizard screen and field runs in one)."""
    return cast("WizardApp", node.app)
