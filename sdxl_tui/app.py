"""The Textual App: screens, bindings with stable ids, CSS, theme, command palette entries.

The draft run lives in `self.state` (a WizardState); step screens are installed once per
draft and switched between, so going back keeps what was typed.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.theme import Theme

from sdxl_tui.screens import STEP_TITLES
from sdxl_tui.screens.start import StartScreen, list_templates

if TYPE_CHECKING:  # the config machinery (pydantic) loads after the first paint
    from sdxl_tui.wizard_state import WizardState

_HERE = Path(__file__).parent

# Every colour is an exact xterm-256 palette entry, so the theme looks the same when a
# terminal (or tmux without RGB) falls back to 256 colours.
THEME_256 = Theme(
    name="sdxl-256",
    primary="#5f87d7",
    secondary="#5fafaf",
    accent="#d7af5f",
    warning="#d7af00",
    error="#ff5f5f",
    success="#5faf5f",
    foreground="#d0d0d0",
    background="#1c1c1c",
    surface="#262626",
    panel="#303030",
    dark=True,
)


def _step_module(step: int):
    import importlib

    names = ("step_model", "step_dataset", "step_network", "step_learning", "step_memory",
             "step_samples", "step_review")
    return importlib.import_module(f"sdxl_tui.screens.{names[step - 1]}")


def _warm_imports() -> None:
    """Import the steps' modules while the person reads the start screen (they cost ~0.5 s)."""
    for step in range(1, len(STEP_TITLES) + 1):
        _step_module(step)
    import engine.config.rules  # noqa: F401
    import engine.plan.run_plan  # noqa: F401


class WizardCommands(Provider):
    """Command palette: open a template or config, jump to a step."""

    def _commands(self) -> list[tuple[str, object, str]]:
        app: WizardApp = self.app  # type: ignore[assignment]
        out: list[tuple[str, object, str]] = []
        for template in list_templates():
            out.append((f"Open template: {template.name}", partial(app.open_template, template.path),
                        template.summary))
        out.append(("Open config…", app.action_open_config, "open a saved run config"))
        out.append(("Import sd-scripts config…", app.action_import_kohya, "args TOML or kohya_ss GUI JSON"))
        out.append(("Start screen", partial(app.goto_step, 0), "back to the first screen"))
        if app.has_draft:
            for number, title in enumerate(STEP_TITLES, start=1):
                out.append((f"Go to step {number}: {title}", partial(app.goto_step, number), ""))
        return out

    async def discover(self) -> Hits:
        """Every command when the palette opens with no query."""
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)  # type: ignore[arg-type]

    async def search(self, query: str) -> Hits:
        """The commands matching `query`, best first, with the matched letters highlighted."""
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)  # type: ignore[arg-type]


class WizardApp(App):
    """The wizard: the start screen, the seven steps over one draft (`state`), and the live dashboard once a saved
    config trains. Implements sdxl_tui.wizard_app.Wizard."""
    TITLE = "sdxl-tui"
    CSS_PATH = [p for p in (_HERE / "sdxl_tui.tcss", _HERE / "dashboard.tcss") if p.exists()]
    COMMANDS = App.COMMANDS | {WizardCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
        Binding("f1", "goto_step(1)", "Model", id="app.step1", show=False),
        Binding("f2", "goto_step(2)", "Dataset", id="app.step2", show=False),
        Binding("f3", "goto_step(3)", "Network", id="app.step3", show=False),
        Binding("f4", "goto_step(4)", "Learning", id="app.step4", show=False),
        Binding("f5", "goto_step(5)", "Memory", id="app.step5", show=False),
        Binding("f6", "goto_step(6)", "Samples", id="app.step6", show=False),
        Binding("f7", "goto_step(7)", "Review", id="app.step7", show=False),
    ]

    def __init__(self, config_path: Optional[Path] = None, *, cursor_blink: bool = True,
                 save_dir: Optional[Path] = None, gpu=None) -> None:
        super().__init__()
        self.state: Optional[WizardState] = None  # the draft, once one is begun
        self.has_draft = False
        self.cursor_blink = cursor_blink  # tests freeze it for stable snapshots
        self.save_dir = save_dir or Path.cwd()  # where a new run's config is proposed
        self._initial_config = config_path
        self._installed_steps: set[int] = set()
        self.gpu = gpu  # sdxl_tui.gpu_info.GpuInfo once detected (tests pin it)

    def on_mount(self) -> None:
        """Show the start screen (or open --config), then warm the heavy imports in a thread after the first paint."""
        self.register_theme(THEME_256)
        self.theme = "sdxl-256"
        self.push_screen(StartScreen())
        if self._initial_config is not None:
            self.open_config(self._initial_config)
        else:  # after the first paint, so it never delays it
            self.set_timer(0.3, lambda: self.run_worker(_warm_imports, thread=True, exit_on_error=False,
                                                        group="warm-up"))

    # -- beginning a draft -------------------------------------------------------------------
    def begin(self, state: "WizardState", step: int = 1) -> None:
        """Make `state` the draft and show step `step`; step screens of an earlier draft not on the screen stack are
        dropped, so they are built again for this one."""
        self.state = state
        self.has_draft = True
        for number in list(self._installed_steps):
            if not any(s is self._step_screen_if_installed(number) for s in self.screen_stack):
                self.uninstall_screen(f"step-{number}")
                self._installed_steps.discard(number)
        self.goto_step(step)

    def open_template(self, path: Path) -> None:
        """Begin a draft from a template TOML (saving never overwrites the template); a file that cannot be opened is
        a notification."""
        from sdxl_tui.wizard_state import template_state

        self._begin_from(lambda: template_state(path))

    def open_defaults(self) -> None:
        """Begin a draft from the built-in defaults."""
        from sdxl_tui.wizard_state import WizardState

        self.begin(WizardState(source_note="new run from the built-in defaults"))

    def open_config(self, path: Path, kohya: bool = False) -> None:
        """Begin a draft from a saved run config, or with `kohya` from an sd-scripts args TOML or kohya_ss GUI JSON;
        a file that cannot be opened is a notification."""
        from sdxl_tui.wizard_state import import_kohya_state, load_state

        self._begin_from(lambda: import_kohya_state(path) if kohya else load_state(path))

    def open_recent(self, run) -> None:
        """A recent run's config as a new draft (its output folder's copy is never overwritten)."""
        from sdxl_tui.wizard_state import load_state

        def make():
            state = load_state(run.config_path)
            state.config_path = None
            state.source_note = f"from the run in {run.output_dir}"
            return state

        self._begin_from(make, step=len(STEP_TITLES))

    def watch_recent(self, run) -> None:
        """The live dashboard of a recent run (following its events.jsonl)."""
        from sdxl_tui.screens.dashboard import DashboardScreen

        self.push_screen(DashboardScreen.watching(run.output_dir))

    def _begin_from(self, make_state, step: int = 1) -> None:
        from engine.errors import SdxlTuiError

        try:
            state = make_state()
        except (SdxlTuiError, OSError) as exc:
            self.notify(str(exc), title="Could not open", severity="error", timeout=8)
            return
        self.begin(state, step)

    def action_open_config(self) -> None:
        """Back to the start screen, then ask for a config path (the command palette's "Open config…")."""
        self.goto_step(0)
        self.call_after_refresh(lambda: self._start_screen().action_open_config())

    def action_import_kohya(self) -> None:
        """Back to the start screen, then ask for an sd-scripts config path."""
        self.goto_step(0)
        self.call_after_refresh(lambda: self._start_screen().action_import_kohya())

    def _start_screen(self) -> StartScreen:
        """The start screen, shown by goto_step(0) just before."""
        screen = self.screen
        assert isinstance(screen, StartScreen), screen
        return screen

    # -- moving between steps ----------------------------------------------------------------
    def _step_screen_if_installed(self, number: int):
        return self.get_screen(f"step-{number}") if number in self._installed_steps else None

    def action_goto_step(self, step: int) -> None:
        """The F1-F7 keys: go to a step once a draft exists (before that they do nothing)."""
        if self.has_draft:
            self.goto_step(step)

    def goto_step(self, step: int) -> None:
        """Show step `step` (1-7, higher is the review step), building its screen the first time; 0 or less goes back
        to the start screen."""
        if step <= 0:
            target = next((s for s in self.screen_stack if isinstance(s, StartScreen)), None)
            if target is None:
                self.switch_screen(StartScreen())
            else:
                while self.screen is not target:
                    self.pop_screen()
            return
        step = min(step, len(STEP_TITLES))
        name = f"step-{step}"
        if step not in self._installed_steps:
            self.install_screen(_step_module(step).SCREEN(), name)
            self._installed_steps.add(step)
        if isinstance(self.screen, StartScreen):
            self.push_screen(name)
        elif self.screen is not self.get_screen(name):
            self.switch_screen(name)

    # -- running -----------------------------------------------------------------------------
    def start_training(self, config_path: Path) -> None:
        """Open the live dashboard running the saved config (engine.train.run in its worker thread)."""
        from engine.config.schema import resolve_relative_paths
        from engine.config.toml_file import load_config
        from sdxl_tui.recent_runs import remember

        # Relative paths in a run config are relative to its folder, wherever the app was started.
        cfg = resolve_relative_paths(load_config(config_path), config_path.parent)
        out_dir = Path(cfg.saving.output_dir)
        remember(out_dir)
        from sdxl_tui.screens.dashboard import DashboardScreen

        self.push_screen(DashboardScreen(cfg, config_path))
