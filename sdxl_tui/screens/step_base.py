"""What every wizard step shares: header with the step strip, fields, info panel, back/next.

A step lists its fields in `compose_fields` and fills its info panel in `refresh_info`,
which runs whenever the draft changes (an edit here, or on return from another step). The
info panel also lists the rule issues (engine.config.rules) that involve this step's options.
"""
from __future__ import annotations

from typing import Iterable, Optional

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Button, Footer, Static

from sdxl_tui.planning import PlanReady, make_draft_plan
from sdxl_tui.screens import STEP_TITLES
from sdxl_tui.widgets.fields import ConfigField
from sdxl_tui.wizard_app import Wizard, wizard_of

PLAN_QUIET_S = 0.2  # seconds without an edit before the draft is planned again


def step_strip(current: int) -> str:
    """The header strip of step numbers and short titles, `current` in reverse video (Rich markup)."""
    parts = []
    for number, title in enumerate(STEP_TITLES, start=1):
        short = title.split(" ")[0]
        parts.append(f"[reverse] {number} {short} [/]" if number == current else f" {number} {short} ")
    return "".join(parts)


class StepScreen(Screen):
    """Base class: subclasses set STEP and implement compose_fields / refresh_info."""

    STEP = 0
    AUTO_FOCUS = "#step-fields .field-editor"  # the first field, not its scroll container
    NEEDS_PLAN = False  # steps showing plan figures re-plan the draft as it changes
    _plan_timer: Optional[Timer] = None  # the wait before re-planning after an edit (request_plan)
    BINDINGS = [
        Binding("ctrl+n", "next_step", "Next", id="wizard.next", priority=True),
        Binding("escape", "previous_step", "Back", id="wizard.back"),
        Binding("ctrl+r", "goto_review", "Review", id="wizard.review"),
    ]

    @property
    def wizard(self) -> Wizard:
        """The app, typed (sdxl_tui.wizard_app)."""
        return wizard_of(self)

    @property
    def title_text(self) -> str:
        """This step's title (STEP_TITLES)."""
        return STEP_TITLES[self.STEP - 1]

    def compose(self) -> ComposeResult:
        """Header (step title, how the draft began, step strip), fields and info side by side, Back/Next."""
        with Vertical(id="step-header"):
            note = self.wizard.state.source_note
            yield Static(f"[b]Step {self.STEP}/7 · {self.title_text}[/b]  [dim]{escape(note)}[/]", id="step-title")
            yield Static(step_strip(self.STEP), id="step-strip")
        with Horizontal(id="step-body"):
            with VerticalScroll(id="step-fields"):
                yield from self.compose_fields()
            with VerticalScroll(id="step-info"):
                yield from self.compose_info()
                yield Static("", id="step-issues")
        with Horizontal(id="step-nav"):
            yield Button("◀ Back", id="nav-back", compact=True)
            yield Static("", id="nav-spacer")
            yield Button("Next ▶", id="nav-next", compact=True, variant="primary")
        yield Footer()

    def compose_fields(self) -> Iterable[Widget]:
        """The step's form: ConfigFields and other widgets for the left column."""
        return ()

    def compose_info(self) -> Iterable[Widget]:
        """The step's info panel widgets (right column), filled by refresh_info."""
        return ()

    # -- keys that this step's issues are filtered by ----------------------------------------
    def field_keys(self) -> set[str]:
        """The options this step edits; the rule issues shown here are those naming one of them."""
        return {f.key for f in self.query(ConfigField)}

    def on_screen_resume(self) -> None:
        """Coming back from another step: reload every field from the draft (it may have changed there) and redraw."""
        for field in self.query(ConfigField):
            field.reload()
        self.refresh_everything()
        self.plan_now()

    def on_mount(self) -> None:
        """Fill the info panel and the issues (and plan) once the fields exist."""
        self.refresh_everything()
        self.plan_now()

    def refresh_everything(self) -> None:
        """Redraw the info panel and the issues, and re-plan the draft (once edits pause) when the step shows plan
        figures."""
        self.refresh_info()
        self.refresh_issues()
        if self.NEEDS_PLAN:
            self.request_plan()

    # -- planning in a worker ----------------------------------------------------------------
    @property
    def current_plan(self):
        """The latest plan outcome if it was made for the draft as it is now, else None."""
        state = self.wizard.state
        outcome = state.plan
        fresh = outcome is not None and outcome.cfg == state.cfg and outcome.dataset_toml == state.dataset_toml
        return outcome if fresh else None

    def request_plan(self) -> None:
        """Plan the draft PLAN_QUIET_S after the last edit (each edit restarts the wait), unless the current plan is
        already for it."""
        # A plan reads the dataset (every image's size): typing a path or a number plans once when the typing
        # pauses, not once per key (a worker thread cannot be stopped, so per-key plans would pile up).
        if self._plan_timer is not None:
            self._plan_timer.stop()
            self._plan_timer = None
        if self.current_plan is None:
            self._plan_timer = self.set_timer(PLAN_QUIET_S, self.plan_now)

    def plan_now(self) -> None:
        """Plan the draft in a worker now (a waiting request_plan is dropped) unless the current plan is already for
        it; on_plan_ready takes the result."""
        if self._plan_timer is not None:
            self._plan_timer.stop()
            self._plan_timer = None
        state = self.wizard.state
        if self.NEEDS_PLAN and self.current_plan is None:
            self._plan_worker(state.cfg, state.dataset_draft, state.base_dir)

    @property
    def plan_pending(self) -> bool:
        """True while an edit's re-plan waits for typing to pause."""
        return self._plan_timer is not None

    @work(thread=True, exclusive=True, group="plan", exit_on_error=False)
    def _plan_worker(self, cfg, dataset_draft, base_dir) -> None:
        self.post_message(PlanReady(make_draft_plan(cfg, dataset_draft, base_dir)))

    def on_plan_ready(self, message: PlanReady) -> None:
        """Keep the plan when it was made for the draft as it is now (a stale one is dropped) and redraw the info
        panel."""
        state = self.wizard.state
        if message.outcome.cfg == state.cfg and message.outcome.dataset_toml == state.dataset_toml:
            state.plan = message.outcome
            self.refresh_info()

    def refresh_info(self) -> None:
        """Subclasses update their info panel from self.app.state."""

    def refresh_issues(self) -> None:
        """Show the rule issues that involve this step's options."""
        keys = self.field_keys()
        issues = [i for i in self.wizard.state.issues() if keys & set(i.keys)]
        lines = [("[red]✗[/] " if i.level == "error" else "[yellow]![/] ") + escape(i.message) for i in issues]
        self.query_one("#step-issues", Static).update("\n".join(lines))

    def on_config_field_edited(self, event: ConfigField.Edited) -> None:
        """After an edit: reload the other fields (rule fixes may have changed them), show the fixes' notes under the
        edited one, redraw."""
        for field in self.query(ConfigField):
            if field is not event.field:
                field.reload()
        event.field.set_note("\n".join(f"→ {note}" for note in event.notes))
        self.refresh_everything()

    # -- navigation --------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        """The Back and Next buttons."""
        if event.button.id == "nav-next":
            event.stop()
            self.action_next_step()
        elif event.button.id == "nav-back":
            event.stop()
            self.action_previous_step()

    def action_next_step(self) -> None:
        """Ctrl+N: the next step."""
        self.wizard.goto_step(self.STEP + 1)

    def action_previous_step(self) -> None:
        """Esc: the previous step (from step 1, the start screen)."""
        self.wizard.goto_step(self.STEP - 1)

    def action_goto_review(self) -> None:
        """Ctrl+R: the review step."""
        self.wizard.goto_step(len(STEP_TITLES))


def escape(text: str) -> str:
    """`text` with Rich markup characters escaped, for showing file names and messages verbatim."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
