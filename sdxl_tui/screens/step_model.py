"""Step 1 · Model: the base SDXL model (path or Hub id) and an optional separate VAE.

On leaving the model field the source is detected (diffusers folder / single file / Hub id)
with `engine.model.source`, which reads only file headers and configs: no torch here.
"""
from __future__ import annotations

from textual import work
from textual.message import Message
from textual.widgets import Input, Static

from sdxl_tui.screens.step_base import StepScreen, escape
from sdxl_tui.widgets.fields import ConfigField


def describe_model(name: str, tokenizer_cache_dir: str = "") -> str:
    """What the model field points at and which tokenizers it will use, in a few lines (never raises)."""
    if not name:
        return ("No model yet: type a folder, a .safetensors file or a Hub id "
                "(e.g. stabilityai/stable-diffusion-xl-base-1.0).")
    from engine.model.source import check_sdxl_shape, detect_model_source

    try:
        source = detect_model_source(name)
    except Exception as exc:  # a person's typo must not crash the wizard: show why
        return f"[red]✗[/] {escape(str(exc))}"
    lines = [f"[b]{escape(source.kind)}[/b] · {escape(source.description)}"]
    try:
        shape = check_sdxl_shape(source)
    except Exception as exc:
        lines.append(f"[red]✗ not usable as SDXL:[/] {escape(str(exc))}")
    else:
        if shape is None:
            lines.append("[dim]not downloaded yet: the SDXL check runs when training loads it[/]")
        else:
            size_note = "full SDXL base size" if shape.is_sdxl_base_size else "smaller than SDXL base: a test model"
            lines.append(f"[green]✓[/] {escape(shape.description)} ({size_note})")
    lines.append(_tokenizer_line(source, tokenizer_cache_dir))
    return "\n".join(lines)


def _tokenizer_line(source, tokenizer_cache_dir: str) -> str:
    from engine.model.tokenizer_source import describe_tokenizers

    try:
        return f"[dim]tokenizers:[/] {escape(describe_tokenizers(source, tokenizer_cache_dir))}"
    except Exception as exc:  # shown, not raised: the person fixes tokenizer_cache_dir here
        return f"[red]✗ tokenizers:[/] {escape(str(exc))}"


_REDETECT_ON = ("in-pretrained_model_name_or_path", "in-tokenizer_cache_dir")


class ModelDetected(Message):
    """Posted by the model-detecting worker: what the model source is, as a line of text."""
    def __init__(self, name: str, text: str) -> None:
        super().__init__()
        self.name = name
        self.text = text


class ModelStep(StepScreen):
    """Step 1: the base model, a separate VAE and the tokenizer folder."""
    STEP = 1

    def compose_fields(self):
        """Base model, separate VAE and tokenizer folder, each with path completion."""
        yield ConfigField("pretrained_model_name_or_path", label="Base model", path=True)
        yield ConfigField("vae", label="Separate VAE", path=True)
        yield ConfigField("tokenizer_cache_dir", label="Tokenizer folder", path=True)

    def compose_info(self):
        """What the model source is."""
        yield Static("[b]Model[/b]", classes="info-title")
        yield Static("", id="model-detected")

    def on_mount(self) -> None:
        """Describe the model as the step opens."""
        super().on_mount()
        self.detect()

    def on_input_blurred(self, event: Input.Blurred) -> None:
        """Describe the model again when a path field loses focus."""
        if event.input.id in _REDETECT_ON:
            self.detect()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Describe the model again when Enter is pressed in a path field."""
        if event.input.id in _REDETECT_ON:
            self.detect()

    def detect(self) -> None:
        """Describe the model and tokenizer sources in a worker (reads file headers and configs only)."""
        model = self.wizard.state.cfg.model
        self._detect(model.pretrained_model_name_or_path, model.tokenizer_cache_dir)

    @work(thread=True, exclusive=True, group="detect-model", exit_on_error=False)
    def _detect(self, name: str, tokenizer_cache_dir: str) -> None:
        self.post_message(ModelDetected(name, describe_model(name, tokenizer_cache_dir)))

    def on_model_detected(self, message: ModelDetected) -> None:
        """Show the detected model."""
        self.query_one("#model-detected", Static).update(message.text)


SCREEN = ModelStep
