"""Step 5 · Memory & speed: precision, checkpointing, caching, fused backward, and whether it fits.

The VRAM estimate (engine.plan.vram, via the plan's largest bucket) updates as options change,
against the GPU found here. The rules (engine.config.rules) apply as you toggle: e.g. caching
text-encoder outputs turns on network_train_unet_only, and the field says why.
"""
from __future__ import annotations

from textual import work
from textual.message import Message
from textual.widgets import Static

from sdxl_tui.gpu_info import GpuInfo
from sdxl_tui.screens.step_base import StepScreen
from sdxl_tui.widgets.fields import ConfigField


class GpuDetected(Message):
    """Posted by the GPU-detecting worker."""
    def __init__(self, gpu: GpuInfo) -> None:
        super().__init__()
        self.gpu = gpu


def vram_text(cfg, outcome, gpu) -> str:
    """The info panel text for step 5: the VRAM estimate by part in GB (1e9 bytes) against the detected card (Rich
    markup)."""
    from engine.plan.vram import estimate_vram

    plan = outcome.plan if outcome is not None and not outcome.error else None
    est = estimate_vram(cfg, plan)
    lines = [f"estimate: [b]{est.total:.1f} GB[/b] at {est.resolution[0]}×{est.resolution[1]} × batch {est.batch_size}"
             + ("" if plan is not None else " [dim](no dataset plan: 1024² assumed)[/]")]
    for name, gb in est.breakdown():
        if gb > 0:
            lines.append(f"  {name:<24} {gb:6.2f} GB")
    if gpu is None:
        lines.append("[dim]looking for a GPU…[/]")
    elif gpu.is_cpu:
        lines.append(f"device: {gpu} — training runs on the CPU (slow; fine for the tiny demo model)")
    else:
        total_gb = gpu.total_bytes / 1e9
        verdict = ("[green]✓ fits[/]" if est.total <= total_gb * 0.95 else
                   "[yellow]! tight[/]" if est.total <= total_gb else "[red]✗ does not fit[/]")
        lines.append(f"device: {gpu} → {verdict} ({est.total:.1f} of {total_gb:.1f} GB)")
    return "\n".join(lines)


class MemoryStep(StepScreen):
    """Step 5: precision, gradient checkpointing and caching, with the VRAM estimate."""
    STEP = 5
    NEEDS_PLAN = True

    def compose_fields(self):
        """Precision, gradient checkpointing, caching, fp32 VAE and the other memory options."""
        yield ConfigField("mixed_precision", label="Mixed precision")
        yield ConfigField("gradient_checkpointing", label="Gradient checkpointing")
        yield ConfigField("cache_latents", label="Cache latents")
        yield ConfigField("cache_latents_to_disk", label="…to disk")
        yield ConfigField("cache_text_encoder_outputs", label="Cache text enc. outputs")
        yield ConfigField("cache_text_encoder_outputs_to_disk", label="…to disk")
        yield ConfigField("no_half_vae", label="fp32 VAE (no_half_vae)")
        yield ConfigField("fused_backward_pass", label="Fused backward pass")

    def compose_info(self):
        """The VRAM estimate."""
        yield Static("[b]GPU memory[/b]", classes="info-title")
        yield Static("", id="memory-vram")

    def field_keys(self) -> set[str]:
        """Also the options on other steps that change the estimate (UNet only, accumulation, optimizer)."""
        return super().field_keys() | {"network_train_unet_only", "gradient_accumulation_steps", "optimizer_type"}

    def on_mount(self) -> None:
        """Detect the GPU once, in a worker, unless the app already knows it."""
        super().on_mount()
        if getattr(self.app, "gpu", None) is None:
            self.find_gpu()

    @work(thread=True, exclusive=True, group="gpu", exit_on_error=False)
    def find_gpu(self) -> None:
        """Detect the GPU in a worker thread and post GpuDetected."""
        from sdxl_tui.gpu_info import detect_gpu

        self.post_message(GpuDetected(detect_gpu()))

    def on_gpu_detected(self, message: GpuDetected) -> None:
        """Remember the GPU on the app and redraw the estimate against it."""
        self.wizard.gpu = message.gpu
        self.refresh_info()

    def refresh_info(self) -> None:
        """Show vram_text for the draft, its plan and the GPU."""
        state = self.wizard.state
        self.query_one("#memory-vram", Static).update(
            vram_text(state.cfg, self.current_plan, getattr(self.app, "gpu", None)))


SCREEN = MemoryStep
