"""The RunConfig sections that say what is learned and how: `network` (the LoRA or LyCORIS
network, its rank, alpha, dropouts and network_args) and `optimizer` (optimizer, learning
rates, scheduler, with optimizer names canonicalised as sd-scripts spells them).

Field names are sd-scripts' option names; each `description` is the wizard's help text and the
comment in a saved TOML file (engine/config/schema.py assembles RunConfig from the sections).
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from engine.config.key_value import parse_pairs
from engine.config.optimizer_names import canonical_optimizer_name, unknown_name_message
from engine.config.section import Section

SchedulerName = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
    "adafactor", "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant",
]


class NetworkSection(Section):
    """[network]: the adapter trained (sd-scripts' networks.lora or LyCORIS), its rank, alpha and options.

    Field bounds are checked by pydantic (ValidationError); network_args are parsed lazily: a bad
    networks.lora entry raises ConfigError when `lora_args` reads it.
    """
    network_module: Literal["networks.lora", "lycoris.kohya"] = Field(
        "networks.lora", description="networks.lora (sd-scripts' LoRA, LoCon via conv_dim) or lycoris.kohya "
                                     "(LyCORIS: network_args algo=locon/loha/lokr/ia3/full, needs the lycoris extra).")
    network_dim: int = Field(16, ge=1, le=100_000, description=(
        "LoRA rank: size of the low-rank update per layer (LyCORIS LoKr reads a very large value, e.g. 100000, "
        "as a full-size w2)."))
    network_alpha: float = Field(
        8.0, gt=0.0, description="LoRA alpha: the update is scaled by alpha / dim (e.g. 8 / 16 = 0.5).")
    network_dropout: Optional[float] = Field(
        None, ge=0.0, lt=1.0, description="Dropout on the LoRA down projection's output (none when unset).")
    network_args: list[str] = Field(
        default_factory=list,
        description='Extra "key=value" network options as in sd-scripts: conv_dim=4, conv_alpha=1.')
    network_train_unet_only: bool = Field(
        False, description="Train LoRA on the UNet only (no text-encoder modules in the file).")
    network_weights: str = Field("", description="Existing LoRA .safetensors to continue training from.")
    # --- issue 13 (networks) ---
    network_train_text_encoder_only: bool = Field(
        False, description="Train LoRA on the text encoders only (no UNet modules in the file).")
    dim_from_weights: bool = Field(
        False, description="Take rank and alpha of every module from network_weights instead of network_dim/alpha.")
    base_weights: list[str] = Field(
        default_factory=list, description="LoRA files merged into the base model before training (not trained).")
    base_weights_multiplier: list[float] = Field(
        default_factory=list, description="Strength of each base_weights file (1.0 each when unset).")
    scale_weight_norms: Optional[float] = Field(
        None, gt=0.0, description="Max-norm regularisation: scale down any module whose update norm exceeds this "
                                  "(1.0 is common); off when unset.")

    @property
    def lora_args(self):
        """network_args parsed for networks.lora (engine.config.network_args.LoraArgs)."""
        from engine.config.network_args import parse_lora_args

        return parse_lora_args(self.parsed_args, self.network_dim, self.network_alpha)

    @property
    def parsed_args(self) -> dict[str, str]:
        """network_args as {key: value} (both stripped, the last repeat wins, an entry without "=" maps to "")."""
        return parse_pairs(self.network_args)

    @property
    def conv_dim(self) -> Optional[int]:
        """network_args' conv_dim (rank of the 3x3 conv LoRA, LoCon), None when unset or empty.

        Raises ValueError when the value is not an integer.
        """
        value = self.parsed_args.get("conv_dim")
        return int(value) if value else None

    @property
    def conv_alpha(self) -> Optional[float]:
        """network_args' conv_alpha; 1.0 when only conv_dim is given (sd-scripts networks/lora.py
        `create_network`), None when conv layers are not trained. Raises ValueError for a non-number.
        """
        value = self.parsed_args.get("conv_alpha")
        if value:
            return float(value)
        # sd-scripts' networks.lora takes conv_alpha = 1.0 when only conv_dim is given.
        return 1.0 if self.conv_dim else None


class OptimizerSection(Section):
    """[optimizer]: optimizer class and arguments, learning rates, lr schedule and gradient clipping.

    `optimizer_type` is canonicalised to sd-scripts' spelling (any case, or a class path); an unknown
    name fails validation (pydantic ValidationError listing the known names). Warm-up and decay lengths
    are optimizer steps, or a fraction of all steps when below 1.
    """
    optimizer_type: str = Field(
        "AdamW8bit", description="Optimizer: any sd-scripts name (AdamW8bit, Lion, DAdaptAdam, Prodigy, Adafactor, "
                                 "AdamWScheduleFree, ...; any case) or a class path such as torch.optim.RAdam.")
    optimizer_args: list[str] = Field(
        default_factory=list, description='Extra "key=value" optimizer arguments, e.g. weight_decay=0.01.')
    learning_rate: float = Field(1e-4, gt=0.0, description="Base learning rate; the default for the three below.")
    unet_lr: Optional[float] = Field(None, gt=0.0, description="UNet LoRA learning rate (defaults to learning_rate).")
    text_encoder_lr1: Optional[float] = Field(
        None, ge=0.0,
        description="Text encoder 1 (CLIP ViT-L, 768 wide, 12 layers) learning rate; defaults to learning_rate.")
    text_encoder_lr2: Optional[float] = Field(
        None, ge=0.0,
        description="Text encoder 2 (OpenCLIP ViT-bigG, 1280 wide, 32 layers) learning rate; defaults to "
                    "learning_rate.")
    lr_scheduler: SchedulerName = Field("constant", description="Learning-rate schedule.")
    lr_warmup_steps: float = Field(
        0, ge=0, description="Warm-up: a step count, or below 1 a fraction of the total steps.")
    lr_scheduler_num_cycles: int = Field(
        1, ge=1, description="Cycles of cosine_with_restarts; cosine_with_min_lr and warmup_stable_decay get half of "
                             "it "
                             "as their cosine's cycles (1 = one half-cosine), as sd-scripts passes it.")
    lr_scheduler_power: float = Field(1.0, gt=0.0, description="Power for the polynomial schedule.")
    # --- i13b: schedule timing options (sd-scripts names) ---
    lr_decay_steps: float = Field(
        0, ge=0, description="Decay length of warmup_stable_decay: a step count, or below 1 a fraction of the total "
                             "steps.")
    lr_scheduler_timescale: Optional[int] = Field(
        None, ge=1, description="Time scale of inverse_sqrt (unset: the warm-up length).")
    lr_scheduler_min_lr_ratio: Optional[float] = Field(
        None, ge=0.0, le=1.0, description="Lowest rate as a ratio of the base rate (cosine_with_min_lr, "
                                          "warmup_stable_decay).")
    lr_scheduler_type: str = Field(
        "", description="A scheduler class instead of lr_scheduler: a torch.optim.lr_scheduler name or a class path.")
    lr_scheduler_args: list[str] = Field(
        default_factory=list,
        description='"key=value" arguments of the scheduler, e.g. T_max=100 or step_rules="1:10,0.1".')
    max_grad_norm: float = Field(1.0, ge=0.0, description="Clip gradients to this norm (0 turns clipping off).")

    @field_validator("optimizer_type", mode="before")
    @classmethod
    def _known_optimizer(cls, value: object) -> str:
        name = canonical_optimizer_name(str(value))
        if name is None:
            raise ValueError(unknown_name_message(str(value)))
        return name

    @property
    def resolved_unet_lr(self) -> float:
        """unet_lr, else learning_rate: the UNet LoRA group's learning rate."""
        return self.unet_lr if self.unet_lr is not None else self.learning_rate

    @property
    def resolved_text_encoder_lr1(self) -> float:
        """text_encoder_lr1, else learning_rate: text encoder 1's (CLIP ViT-L) LoRA learning rate (0 freezes it)."""
        return self.text_encoder_lr1 if self.text_encoder_lr1 is not None else self.learning_rate

    @property
    def resolved_text_encoder_lr2(self) -> float:
        """text_encoder_lr2, else learning_rate: text encoder 2's (OpenCLIP bigG) LoRA learning rate (0 freezes it)."""
        return self.text_encoder_lr2 if self.text_encoder_lr2 is not None else self.learning_rate

    @property
    def parsed_args(self) -> dict[str, str]:
        """optimizer_args as {key: value} strings (the last repeat wins, an entry without "=" maps to "")."""
        return parse_pairs(self.optimizer_args)
