"""The dashboard's commands out: stop, save now, sample now (to the engine through RunControl
when the dashboard owns the run, else through the watched run's command file), the config
view, and leaving. A mixin of DashboardScreen (sdxl_tui/screens/dashboard.py), which declares
the key bindings and owns the state these read: `owns_run`, `control`, `_commands`, `view`,
`cfg`, `config_path`, `stopping`, `_leave_when_done`, `_render_view`.
"""
from __future__ import annotations

from typing import Optional

from sdxl_tui.screens.dashboard_modals import ConfigScreen, ConfirmScreen


class DashboardCommands:
    """Actions and their availability (`check_action`): a run can be commanded only while it runs,
    and only when this dashboard owns it or can write its command file."""

    def check_action(self, action: str, parameters: tuple) -> Optional[bool]:
        """Stop / save / sample are offered (True) only while the run goes on and this dashboard can command
        it; otherwise hidden (None). Every other action is allowed.
        """
        if action in ("stop", "save_now", "sample_now"):
            can_command = self.owns_run or self._commands is not None
            return True if (can_command and self.view.running) else None
        return True

    def _send(self, command: str) -> None:
        if self.owns_run:
            {"stop": lambda: self.control.request_stop("stopped from the dashboard"),
             "save_now": self.control.save_now, "sample_now": self.control.sample_now}[command]()
        elif self._commands is not None:
            self._commands(command)

    def action_stop(self) -> None:
        """`x`: after a confirmation, ask the run to finish its step, save the LoRA and state, and end."""
        def answered(yes: Optional[bool]) -> None:
            if yes:
                self._request_stop()

        self.app.push_screen(ConfirmScreen(
            "Stop training? The current step finishes, the LoRA is saved, then the run ends.",
            "stop and save", "keep training"), answered)

    def _request_stop(self) -> None:
        self._send("stop")
        self.stopping = True
        self._render_view()

    def action_save_now(self) -> None:
        """`s`: ask the run to save the LoRA and state after the current step."""
        self._send("save_now")
        self.notify("Save requested: the LoRA is written after the current step.")

    def action_sample_now(self) -> None:
        """`p`: ask the run to make sample images after the current step."""
        self._send("sample_now")
        self.notify("Sample requested: images are made after the current step.")

    def action_show_config(self) -> None:
        """`c`: show the run's config.toml (or the config as it would be saved) read-only."""
        title = f"Config: {self.config_path}" if self.config_path else "Config"
        if self.view.running:
            title += " (read-only while running)"
        self.app.push_screen(ConfigScreen(self._config_text(), title))

    def _config_text(self) -> str:
        if self.config_path is not None and self.config_path.exists():
            return self.config_path.read_text(encoding="utf-8")
        if self.cfg is not None:
            from engine.config.toml_file import dumps_config

            return dumps_config(self.cfg)
        return "# no config.toml was found next to this run's events.jsonl\n"

    def action_leave(self) -> None:
        """`q`: leave the dashboard; a run this app owns is stopped and saved first, after a confirmation."""
        if not self.owns_run or not self.view.running:
            self.dismiss(self.view.final)
            return

        def answered(yes: Optional[bool]) -> None:
            if yes:
                self._leave_when_done = True
                self._request_stop()

        self.app.push_screen(ConfirmScreen(
            "The run is still going, and it ends when this app does. Stop it (finish the step, "
            "save) and leave once it is saved?", "stop, save and leave", "keep training"), answered)
