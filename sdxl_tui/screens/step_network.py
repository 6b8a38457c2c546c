"""Step 3 · Network: rank, alpha (and the scale alpha / rank it gives), dropout, conv LoRA, unet-only.

Conv LoRA (LoCon) is sd-scripts' `network_args = ["conv_dim=N", "conv_alpha=M"]`; the two
inputs here edit those entries and keep any other network_args as they were.
"""
from __future__ import annotations

from textual.widgets import Input, Static

from engine.config.key_value import pair_key
from engine.units import human_bytes
from sdxl_tui.screens.step_base import StepScreen
from sdxl_tui.widgets.fields import ConfigField, LabelledRow, plain_input

CONV_KEYS = ("conv_dim", "conv_alpha")


def with_conv_args(args: list[str], conv_dim: str, conv_alpha: str) -> list[str]:
    """network_args with conv_dim / conv_alpha replaced by the given values (both dropped when `conv_dim` is empty)."""
    kept = [a for a in args if pair_key(a) not in CONV_KEYS]
    if conv_dim:
        kept.append(f"conv_dim={conv_dim}")
        if conv_alpha:
            kept.append(f"conv_alpha={conv_alpha}")
    return kept


def network_summary(cfg) -> str:
    """The info panel text for step 3: the LoRA scale alpha / rank (and the conv scale), and the trainable parameter
    count (Rich markup)."""
    n = cfg.network
    scale = n.network_alpha / n.network_dim
    lines = [f"scale = alpha / rank = {n.network_alpha:g} / {n.network_dim} = [b]{scale:.3g}[/b]"]
    if n.conv_dim:
        lines.append(f"conv scale = {n.conv_alpha:g} / {n.conv_dim} = [b]{n.conv_alpha / n.conv_dim:.3g}[/b]")
    from engine.plan.vram import text_encoder_lora_params, unet_lora_params

    params = unet_lora_params(n.network_dim, n.conv_dim)
    if not n.network_train_unet_only:
        params += text_encoder_lora_params(n.network_dim)
    lines.append(f"trainable LoRA parameters on SDXL: {params / 1e6:.1f} M "
                 f"(≈ {human_bytes(params * 2)} saved in fp16)")
    lines.append("trains: UNet only" if n.network_train_unet_only else "trains: UNet + both text encoders")
    return "\n".join(lines)


class NetworkStep(StepScreen):
    """Step 3: rank, alpha, dropout, conv layers and which parts train."""
    STEP = 3

    def compose_fields(self):
        """Rank, alpha, dropout, conv rank and alpha (kept in network_args), UNet only, and a LoRA to continue from."""
        blink = getattr(self.app, "cursor_blink", True)
        n = self.wizard.state.cfg.network
        yield ConfigField("network_dim", label="Rank (network_dim)")
        yield ConfigField("network_alpha", label="Alpha")
        yield ConfigField("network_dropout", label="Dropout")
        yield LabelledRow("Conv rank (conv_dim)", plain_input(str(n.conv_dim or ""), id="net-conv-dim", blink=blink,
                                                              placeholder="off"),
                          "LoCon: also train the ResNet 3×3 convs with this rank (network_args conv_dim); "
                          "empty is off.",
                          id="row-conv-dim")
        yield LabelledRow("Conv alpha", plain_input(n.parsed_args.get("conv_alpha", ""), id="net-conv-alpha",
                                                    blink=blink, placeholder="= conv rank"),
                          "network_args conv_alpha: conv scale is conv_alpha / conv_dim.", id="row-conv-alpha")
        yield ConfigField("network_train_unet_only", label="UNet only")
        yield ConfigField("network_weights", label="Continue from LoRA", path=True)

    def compose_info(self):
        """Scale and trainable parameters."""
        yield Static("[b]Network[/b]", classes="info-title")
        yield Static("", id="network-summary")

    def field_keys(self) -> set[str]:
        """Also network_args (conv_dim and conv_alpha are edited here)."""
        return super().field_keys() | {"network_args"}

    def refresh_info(self) -> None:
        """Show network_summary for the draft."""
        self.query_one("#network-summary", Static).update(network_summary(self.wizard.state.cfg))

    def on_screen_resume(self) -> None:
        """Reload the conv inputs from network_args (another step may have changed them), then the fields."""
        n = self.wizard.state.cfg.network
        self.query_one("#net-conv-dim", Input).value = str(n.conv_dim or "")
        self.query_one("#net-conv-alpha", Input).value = n.parsed_args.get("conv_alpha", "")
        super().on_screen_resume()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Check conv rank (whole number > 0 or empty) and conv alpha (a number, needs a rank) and write them into
        network_args."""
        if event.input.id not in ("net-conv-dim", "net-conv-alpha"):
            return
        dim = self.query_one("#net-conv-dim", Input).value.strip()
        alpha = self.query_one("#net-conv-alpha", Input).value.strip()
        row_dim = self.query_one("#row-conv-dim", LabelledRow)
        row_alpha = self.query_one("#row-conv-alpha", LabelledRow)
        ok = True
        if dim and not (dim.isdigit() and int(dim) > 0):
            row_dim.set_error("enter a whole number above 0, or leave empty for off")
            ok = False
        else:
            row_dim.set_error("")
        try:
            if alpha:
                float(alpha)
            row_alpha.set_error("" if not alpha or dim else "conv alpha needs a conv rank")
        except ValueError:
            row_alpha.set_error("enter a number")
            ok = False
        if ok:
            state = self.wizard.state
            new_args = with_conv_args(list(state.cfg.network.network_args), dim, alpha)
            if new_args != list(state.cfg.network.network_args):
                state.set("network_args", new_args)
                self.refresh_everything()


SCREEN = NetworkStep
