"""Step 6 · Samples & saving: prompts (edited here), how often; save cadence; output folder and name.

Edited prompts are written as `<config>.prompts.txt` next to the run config on save, in
sd-scripts' prompt format (one prompt a line, options like --n negative --w 1024 --s 28).
"""
from __future__ import annotations

from pathlib import Path

from textual.widgets import Static, TextArea

from sdxl_tui.screens.step_base import StepScreen
from sdxl_tui.widgets.fields import ConfigField, LabelledRow


def existing_prompts(state) -> str:
    """The draft's sample prompts: the text being edited, else the sample_prompts file's contents, else ""."""
    if state.prompts_text is not None:
        return state.prompts_text
    name = state.cfg.sampling.sample_prompts
    if not name:
        return ""
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = state.base_dir / path
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


class SamplesStep(StepScreen):
    """Step 6: the sample prompts and how often samples are made."""
    STEP = 6

    def compose_fields(self):
        """The prompts editor, when samples are made, and the saving options (output folder and name, how
        often, what is kept)."""
        state = self.wizard.state
        prompts = TextArea(existing_prompts(state), id="samples-prompts", soft_wrap=True, show_line_numbers=False,
                           compact=True)
        prompts.cursor_blink = getattr(self.app, "cursor_blink", True)
        yield Static("[b]Sample images[/b]", classes="subheading")
        yield LabelledRow("Prompts", prompts,
                          "One prompt a line; options: --n negative --w 1024 --h 1024 --s steps --l cfg --d seed.",
                          id="row-prompts")
        yield ConfigField("sample_every_n_steps", label="Sample every N steps")
        yield ConfigField("sample_every_n_epochs", label="Sample every N epochs")
        yield ConfigField("sample_at_first", label="Sample before training")
        yield ConfigField("sample_sampler", label="Sampler")
        yield Static("[b]Saving[/b]", classes="subheading")
        yield ConfigField("output_dir", label="Output folder", path=True)
        yield ConfigField("output_name", label="Output name")
        yield ConfigField("save_every_n_steps", label="Save every N steps")
        yield ConfigField("save_every_n_epochs", label="Save every N epochs")
        yield ConfigField("save_last_n_epochs", label="Keep last N epochs")
        yield ConfigField("save_state", label="Save state (resume)")
        yield ConfigField("save_precision", label="Save precision")

    def compose_info(self):
        """Where the LoRA files go and how many prompts there are."""
        yield Static("[b]Output[/b]", classes="info-title")
        yield Static("", id="samples-output")

    def field_keys(self) -> set[str]:
        """Also sample_prompts (the editor replaces the file)."""
        return super().field_keys() | {"sample_prompts"}

    def refresh_info(self) -> None:
        """Show the output file pattern and the prompt count (blank and # lines not counted)."""
        state = self.wizard.state
        s = state.cfg.saving
        prompts = [line for line in existing_prompts(state).splitlines() if line.strip() and not line.startswith("#")]
        lines = [f"LoRA files: {s.output_dir}/{s.output_name}*.safetensors",
                 f"{len(prompts)} sample prompt{'s' if len(prompts) != 1 else ''}"]
        self.query_one("#samples-output", Static).update("\n".join(lines))

    def on_text_area_changed(self, event: TextArea.Changed) -> None:
        """Edited prompts become the draft's prompts text (saved next to the config)."""
        state = self.wizard.state
        if event.text_area.text != existing_prompts(state):
            state.prompts_text = event.text_area.text
            self.refresh_everything()


SCREEN = SamplesStep
