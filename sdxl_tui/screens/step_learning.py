"""Step 4 · Learning: learning rates per part, optimizer, schedule, length and batching.

The info panel shows the total steps this gives, from the plan of the draft's dataset.
"""
from __future__ import annotations

from textual.widgets import Static

from engine.config.optimizer_names import OPTIMIZERS, schedule_line
from sdxl_tui.screens.step_base import StepScreen, escape
from sdxl_tui.widgets.fields import ConfigField


def length_text(cfg, outcome) -> str:
    """The info panel text for step 4: learning rates, effective batch, and the run's length once the plan is made
    (Rich markup)."""
    o, t = cfg.optimizer, cfg.training
    lines = [
        f"UNet lr [b]{o.resolved_unet_lr:g}[/b]",
        "text encoders: not trained (UNet only)" if cfg.network.network_train_unet_only else
        f"CLIP-L lr [b]{o.resolved_text_encoder_lr1:g}[/b] · bigG lr [b]{o.resolved_text_encoder_lr2:g}[/b]",
        f"effective batch: {t.train_batch_size} × {t.gradient_accumulation_steps} accumulation",
    ]
    if outcome is None:
        lines.append("[dim]counting steps…[/]")
    elif outcome.error:
        lines.append(f"[yellow]total steps unknown: {escape(outcome.error)}[/]")
    else:
        plan = outcome.plan
        limit = {"max_train_steps": "max_train_steps", "max_train_epochs": "max_train_epochs",
                 "default": "the default (neither limit set)"}.get(plan.limited_by, plan.limited_by)
        lines.append(f"steps per epoch: {plan.steps_per_epoch}")
        lines.append(f"total: [b]{plan.total_steps} steps[/b] over {plan.epochs} epochs (limited by {limit})")
        lines.append(escape(schedule_line(o, plan.total_steps)))
    return "\n".join(lines)


class LearningStep(StepScreen):
    """Step 4: learning rates, optimizer, scheduler and the run's length."""
    STEP = 4
    NEEDS_PLAN = True

    def compose_fields(self):
        """Learning rates, optimizer and its args, scheduler, and the run's length options."""
        yield ConfigField("learning_rate", label="Learning rate")
        yield ConfigField("unet_lr", label="UNet lr")
        yield ConfigField("text_encoder_lr1", label="Text enc. 1 lr (CLIP-L)")
        yield ConfigField("text_encoder_lr2", label="Text enc. 2 lr (bigG)")
        yield ConfigField("optimizer_type", label="Optimizer", suggestions=tuple(OPTIMIZERS))
        yield ConfigField("optimizer_args", label="Optimizer args")
        yield ConfigField("lr_scheduler", label="Scheduler")
        yield ConfigField("lr_warmup_steps", label="Warm-up")
        yield ConfigField("max_train_epochs", label="Epochs")
        yield ConfigField("max_train_steps", label="Steps")
        yield ConfigField("train_batch_size", label="Batch size")
        yield ConfigField("gradient_accumulation_steps", label="Accumulation")

    def compose_info(self):
        """The run's length (from the plan)."""
        yield Static("[b]Length[/b]", classes="info-title")
        yield Static("", id="learning-length")

    def refresh_info(self) -> None:
        """Show length_text for the draft and its plan."""
        self.query_one("#learning-length", Static).update(
            length_text(self.wizard.state.cfg, self.current_plan))


SCREEN = LearningStep
