"""RunConfig: the one typed, frozen, versioned description of a training run.

Field names are sd-scripts' option names wherever one exists, so a user's habits and
files carry over. Every field's `description` is the help text the wizard shows and the
comment written beside the key in a saved TOML file. Loading and saving live in
`toml_file`; cross-option rules in `rules`. The network and optimizer sections are in
`learning_sections`.
"""
from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from engine.config.learning_sections import NetworkSection, OptimizerSection
from engine.config.section import Section

SCHEMA_VERSION = 1


class ModelSection(Section):
    """[model]: the base SDXL model and VAE to load, and how its noise schedule is read (v-pred, zero SNR)."""
    pretrained_model_name_or_path: str = Field(
        "", description="Base SDXL model: Hub id, diffusers folder, or single .safetensors file.")
    vae: str = Field(
        "", description="Optional separate VAE (folder, Hub id or .safetensors); empty keeps the model's own.")
    tokenizer_cache_dir: str = Field(
        "", description="Folder holding the two CLIP tokenizers, for single-file models on offline machines.")
    clip_skip: Optional[int] = Field(
        None, ge=1, description="Accepted for sd-scripts compatibility; SDXL always uses the penultimate layer, so it "
                                "is ignored.")
    v2: bool = Field(False, description="SD 2.x flag from sd-scripts; not valid for SDXL (must stay false).")
    v_parameterization: bool = Field(
        False, description="Train as v-prediction (v-pred SDXL models); a file with a v_pred key is v-pred anyway.")
    zero_terminal_snr: bool = Field(
        False, description="Rescale the noise schedule to zero SNR at the last timestep (arXiv 2305.08891); for "
                           "v-pred.")


class DatasetSection(Section):
    """[dataset]: the sd-scripts dataset TOML, the regularisation-image loss weight and loading options."""
    dataset_config: str = Field(
        "", description="sd-scripts dataset TOML (or JSON): [general], [[datasets]], [[datasets.subsets]].")
    prior_loss_weight: float = Field(
        1.0, ge=0.0, description="Loss weight for regularisation images (subsets with is_reg = true).")
    skip_bad_images: bool = Field(
        False, description="Skip unreadable images with a warning instead of stopping before training.")
    max_data_loader_n_workers: int = Field(
        0, ge=0, description="DataLoader worker processes (0 loads in the training process).")


class TrainingSection(Section):
    """[training]: length (steps / epochs), batch, seed, and sd-scripts' noise, timestep and loss options.

    Step counts are optimizer steps (one per `gradient_accumulation_steps` batches); timesteps are
    indices 0..999 of the 1000-step DDPM schedule. The formulas behind the noise and loss options are
    in engine/train/noise.py and engine/train/loss_terms.py, each with its sd-scripts source.
    """
    max_train_steps: Optional[int] = Field(
        None, ge=1, description="Stop after this many optimizer steps (wins over max_train_epochs when both are set).")
    max_train_epochs: Optional[int] = Field(None, ge=1, description="Stop after this many epochs.")
    train_batch_size: int = Field(1, ge=1, description="Batch size when the dataset TOML gives none.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    seed: int = Field(42, ge=0, description="Random seed: same seed, same data, same result.")
    noise_offset: float = Field(0.0, ge=0.0, description="Noise offset (helps very dark/bright images); 0 is off.")
    min_snr_gamma: Optional[float] = Field(None, gt=0.0, description="Min-SNR-γ loss weighting (5 is common); off "
                                                                     "when unset.")
    # --- sd-scripts' noise, timestep and loss options (issue 12); formulas: engine/train/noise.py, loss_terms.py
    noise_offset_random_strength: bool = Field(
        False, description="Draw the noise offset uniformly from 0..noise_offset each step (sd-scripts default false).")
    adaptive_noise_scale: Optional[float] = Field(
        None, description="Add |latent channel mean| x this to noise_offset (needs noise_offset); off when unset.")
    multires_noise_iterations: int = Field(
        0, ge=0, description="Multi-resolution (pyramid) noise levels, 6-10 typical; 0 is off (the default).")
    multires_noise_discount: float = Field(
        0.3, ge=0.0, le=1.0, description="Weight ratio between pyramid noise levels, 0..1 (sd-scripts default 0.3).")
    ip_noise_gamma: Optional[float] = Field(
        None, ge=0.0, description="Input-perturbation noise strength (0.1 typical, arXiv 2301.11706); off when unset.")
    ip_noise_gamma_random_strength: bool = Field(
        False, description="Draw the input-perturbation strength uniformly from 0..ip_noise_gamma each step.")
    min_timestep: Optional[int] = Field(
        None, ge=0, le=999, description="Lowest training timestep, 0..999 (sd-scripts default 0).")
    max_timestep: Optional[int] = Field(
        None, ge=1, le=1000, description="Timesteps are drawn below this, 1..1000 (sd-scripts default 1000).")
    loss_type: Literal["l1", "l2", "huber", "smooth_l1"] = Field(
        "l2", description="Element-wise loss: l2 (MSE), l1, huber or smooth_l1 (scheduled pseudo-Huber).")
    huber_c: float = Field(
        0.1, gt=0.0, le=1.0, description="Huber loss threshold c, 0..1 (huber / smooth_l1 only; default 0.1).")
    huber_scale: float = Field(
        1.0, gt=0.0, description="Huber c scale (constant / exponential schedules only; default 1.0).")
    huber_schedule: Literal["constant", "exponential", "snr"] = Field(
        "snr", description="How Huber c varies with the timestep: constant, exponential or snr (default snr).")
    debiased_estimation_loss: bool = Field(
        False, description="Weight the loss by 1/sqrt(SNR) (1/(SNR+1) with v-prediction), arXiv 2310.08442.")
    scale_v_pred_loss_like_noise_pred: bool = Field(
        False, description="v-prediction only: scale the loss by SNR/(SNR+1) like an epsilon loss.")
    v_pred_like_loss: Optional[float] = Field(
        None, ge=0.0, description="Epsilon only: add loss x (SNR+1)/SNR x this (v-prediction-like); off when unset.")
    masked_loss: bool = Field(
        False, description="Weight the loss by alpha / conditioning masks (not supported yet: must stay false).")
    weighted_captions: bool = Field(
        False, description="Read (word:1.2), (word) and [word] caption weights (A1111 syntax) as sd-scripts does.")
    max_token_length: Optional[int] = Field(
        None, description="Caption token limit: unset / 75 (one 77-token window), 150 or 225 (2 or 3 windows).")
    # --- issue 13 (EMA) ---
    ema_decay: Optional[float] = Field(
        None, gt=0.0, lt=1.0, description="Keep an exponential moving average of the LoRA weights with this decay "
                                          "(e.g. 0.999) and save it instead of the raw weights; off when unset.")
    ema_update_every: int = Field(1, ge=1, description="Update the EMA every N optimizer steps.")
    # --- issue 14: starting part-way (sd-scripts' names and meanings) ---
    initial_epoch: Optional[int] = Field(
        None, ge=1, description="Start counting at this epoch (1 = the first); initial_step = (N - 1) x steps per "
                                "epoch.")
    initial_step: Optional[int] = Field(
        None, ge=0, description="Start at this step: with skip_until_initial_step its data is skipped, else only "
                                "epochs.")
    skip_until_initial_step: bool = Field(
        False, description="Skip the data of the first initial_step steps and continue the step count from there.")

    @property
    def limited_by(self) -> str:
        """"steps" when max_train_steps is set (it wins, as in sd-scripts), else "epochs"."""
        return "steps" if self.max_train_steps is not None else "epochs"


class PrecisionSection(Section):
    """[precision]: compute dtype, half-precision LoRA / fp8 base weights, and memory-for-speed trades."""
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "bf16", description="Compute precision: bf16 on modern GPUs, fp16 on older ones, no = fp32.")
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: much less memory, ~30% slower.")
    no_half_vae: bool = Field(False, description="Run the VAE in fp32 (SDXL's VAE overflows in fp16).")
    fused_backward_pass: bool = Field(
        False, description="Step each LoRA parameter in its gradient hook so full gradients never coexist.")
    torch_compile: bool = Field(False, description="Compile the UNet with torch.compile (slower start, faster steps).")
    # --- issue 14: half-precision LoRA, fp8 base weights (sd-scripts' names and meanings) ---
    full_fp16: bool = Field(
        False, description="LoRA weights and gradients in fp16 too (needs mixed_precision = fp16): less memory, less "
                           "exact.")
    full_bf16: bool = Field(
        False, description="LoRA weights and gradients in bf16 too (needs mixed_precision = bf16): less memory, less "
                           "exact.")
    fp8_base: bool = Field(
        False, description="Store the frozen UNet and text-encoder weights as float8_e4m3fn (computed in the mixed "
                           "precision).")
    fp8_base_unet: bool = Field(
        False, description="Store only the frozen UNet weights as float8_e4m3fn (computed in the mixed precision).")


class CachingSection(Section):
    """[caching]: VAE latents and text-encoder outputs computed once, in memory or beside each image on disk."""
    cache_latents: bool = Field(True, description="Encode images with the VAE once and keep the latents.")
    cache_latents_to_disk: bool = Field(False, description="Keep cached latents on disk, reused by later runs.")
    cache_text_encoder_outputs: bool = Field(
        False, description="Encode captions once (needs network_train_unet_only; no caption shuffle/dropout).")
    cache_text_encoder_outputs_to_disk: bool = Field(
        False, description="Keep cached text-encoder outputs on disk, reused by later runs.")
    vae_batch_size: int = Field(
        4, ge=1, description="Images per VAE call while caching latents (speed/memory only: each image keeps its own "
                             "noise).")


class SavingSection(Section):
    """[saving]: where LoRA files and states go, how often (epochs / optimizer steps), how many are kept,
    and the modelspec / ss_* metadata written into each LoRA.
    """
    output_dir: str = Field("output", description="Folder for LoRA files, state, samples, config.toml and "
                                                  "events.jsonl.")
    output_name: str = Field("lora", description="Base name of the LoRA files.")
    save_model_as: Literal["safetensors"] = Field(
        "safetensors", description="File format (safetensors only: pickle formats can run code).")
    save_precision: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="dtype of the saved LoRA tensors.")
    save_every_n_epochs: Optional[int] = Field(None, ge=1, description="Save a LoRA every N epochs.")
    save_every_n_steps: Optional[int] = Field(None, ge=1, description="Save a LoRA every N steps.")
    save_last_n_epochs: Optional[int] = Field(None, ge=1, description="Keep only the newest N epoch saves.")
    save_state: bool = Field(False, description="Also save optimizer/scheduler/RNG state with each save, for exact "
                                                "resume.")
    # --- issue 14: keeping saves, metadata (sd-scripts' names and meanings) ---
    save_last_n_steps: Optional[int] = Field(
        None, ge=1, description="Remove step saves older than N steps (sd-scripts: keep saves until N steps have "
                                "passed).")
    save_last_n_epochs_state: Optional[int] = Field(
        None, ge=1, description="Keep only the newest N epoch states (defaults to save_last_n_epochs).")
    save_last_n_steps_state: Optional[int] = Field(
        None, ge=1, description="Remove states older than N steps (defaults to save_last_n_steps).")
    save_state_on_train_end: bool = Field(False, description="Save the training state at the end of training.")
    save_n_epoch_ratio: Optional[int] = Field(
        None, ge=1, description="Save about N epoch LoRAs in all: save_every_n_epochs = floor(epochs / N), at least 1.")
    no_metadata: bool = Field(
        False, description="Write only sd-scripts' minimum metadata (network shape, base model, modelspec.*).")
    training_comment: str = Field("", description="Free text stored in the LoRA as ss_training_comment.")
    metadata_title: str = Field("", description="modelspec.title (defaults to output_name).")
    metadata_author: str = Field("", description="modelspec.author.")
    metadata_description: str = Field("", description="modelspec.description.")
    metadata_license: str = Field("", description="modelspec.license.")
    metadata_tags: str = Field("", description="modelspec.tags (comma separated).")
    metadata_usage_hint: str = Field("", description="modelspec.usage_hint.")
    metadata_thumbnail: str = Field(
        "", description="modelspec.thumbnail: an image file (stored as a data: URL) or a data: URL.")
    metadata_merged_from: str = Field("", description="modelspec.merged_from.")
    metadata_trigger_phrase: str = Field("", description="modelspec.trigger_phrase.")
    metadata_preprocessor: str = Field("", description="modelspec.preprocessor.")
    resume: str = Field(
        "", description="A saved state folder (OUTPUT_DIR/state/step-N) to continue from; sd-scripts' are refused.")


class SamplingSection(Section):
    """[sampling]: sample images from a prompts file, when (steps / epochs / before training), which sampler."""
    sample_prompts: str = Field("", description="Prompts file in sd-scripts' format (--n --w --h --s --l --d options).")
    sample_every_n_steps: Optional[int] = Field(None, ge=1, description="Make sample images every N steps.")
    sample_every_n_epochs: Optional[int] = Field(None, ge=1, description="Make sample images every N epochs.")
    sample_at_first: bool = Field(False, description="Make sample images before training starts.")
    sample_sampler: Literal[
        "ddim", "euler", "euler_a", "dpmsolver++", "k_dpm_2", "pndm", "lms", "heun", "dpm_2_a",
    ] = Field("euler_a", description="Sampler for sample images.")


class LoggingSection(Section):
    """[logging]: metrics cadence (optimizer steps), accelerate trackers (TensorBoard, wandb) and validation loss."""
    logging_dir: str = Field("", description="TensorBoard folder (defaults to output_dir/logs when log_with is set).")
    log_with: Literal["", "tensorboard", "wandb", "all"] = Field(
        "", description='Trackers through accelerate: "" (events.jsonl only), "tensorboard", "wandb" or "all".')
    log_prefix: str = Field("", description="Prefix for the TensorBoard run folder name.")
    log_every_n_steps: int = Field(
        10, ge=1, description="Read loss from the device and emit metrics every N steps (a GPU sync).")
    # --- issue 14: trackers (sd-scripts' names and meanings) ---
    log_tracker_name: str = Field(
        "", description='Tracker project / run name (default "network_train", as sd-scripts).')
    log_tracker_config: str = Field(
        "", description="TOML file of per-tracker init arguments, e.g. [wandb] entity = ...; replaces the defaults.")
    wandb_run_name: str = Field("", description="wandb run name (the key comes from WANDB_API_KEY, never from a file).")
    log_config: bool = Field(False, description="Send the run config to the trackers.")
    # --- issue 14: validation loss on the dataset's validation_split images (sd-scripts' names) ---
    validate_every_n_steps: Optional[int] = Field(
        None, ge=1, description="Validation loss every N steps, besides the per-epoch one (needs validation_split "
                                "in the dataset config).")
    validate_every_n_epochs: Optional[int] = Field(
        None, ge=1, description="Validation loss every N epochs; unset: every epoch when the dataset has a "
                                "validation_split (as sd-scripts).")
    max_validation_steps: Optional[int] = Field(
        None, ge=1, description="Validation batches per evaluation, each at 4 fixed timesteps; unset: all held-out "
                                "images. Reported as their plain mean (sd-scripts' running average differs).")


class RunConfig(Section):
    """The whole run: one typed section per TOML table, frozen, versioned by `schema_version`.

    Building one raises pydantic's ValidationError for an unknown key or an out-of-range value;
    cross-option rules are checked separately (engine/config/rules.py).
    """
    schema_version: int = Field(SCHEMA_VERSION, description="Config format version (migrated on load).")
    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    precision: PrecisionSection = Field(default_factory=PrecisionSection)
    caching: CachingSection = Field(default_factory=CachingSection)
    saving: SavingSection = Field(default_factory=SavingSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)

    def with_values(self, **flat: object) -> "RunConfig":
        """A copy with options changed by their flat (sd-scripts) or dotted names, validated."""
        data = self.model_dump()
        for name, value in flat.items():
            section, key = locate(name)
            data[section][key] = value
        return RunConfig.model_validate(data)


SECTIONS: dict[str, type[Section]] = {
    name: info.annotation  # type: ignore[misc]
    for name, info in RunConfig.model_fields.items()
    if name != "schema_version"
}


def option_index() -> dict[str, str]:
    """Flat option name -> section name (names are unique across sections by design)."""
    return {key: section for section, cls in SECTIONS.items() for key in cls.model_fields}


def locate(name: str) -> tuple[str, str]:
    """Resolve `network_dim` or `network.network_dim` to (section, key)."""
    if "." in name:
        section, key = name.split(".", 1)
        if section in SECTIONS and key in SECTIONS[section].model_fields:
            return section, key
    else:
        index = option_index()
        if name in index:
            return index[name], name
    from engine.config.names import nearest
    from engine.errors import ConfigError

    raise ConfigError(f"unknown option '{name}'", key=name,
                      hint=nearest(name.split(".")[-1], list(option_index())))


def help_for(section: str, key: str) -> str:
    """The `description` of `section.key` (the wizard's help and the saved TOML's comment); "" when it has none.

    Raises KeyError for an unknown section or key.
    """
    return SECTIONS[section].model_fields[key].description or ""


# Options holding file or folder paths. Relative ones are relative to the config file's
# folder, so a config replays the same from any working directory.
PATH_OPTIONS = (
    ("model", "pretrained_model_name_or_path"), ("model", "vae"), ("model", "tokenizer_cache_dir"),
    ("dataset", "dataset_config"), ("network", "network_weights"), ("saving", "output_dir"),
    ("sampling", "sample_prompts"), ("logging", "logging_dir"), ("saving", "resume"),
    ("logging", "log_tracker_config"),
)
PATH_KEYS = tuple(key for _, key in PATH_OPTIONS)  # the same options by their sd-scripts names


def resolve_relative_paths(cfg: RunConfig, base_dir: "str | object") -> RunConfig:
    """A copy with relative path options made absolute against `base_dir`.

    A model or VAE value that is not an existing path stays as written (it may be a Hub id).
    """
    from pathlib import Path

    base = Path(str(base_dir)).resolve()
    changes: dict[str, object] = {}
    for section, key in PATH_OPTIONS:
        value = getattr(getattr(cfg, section), key)
        if not value or Path(value).expanduser().is_absolute():
            if value and value.startswith("~"):
                changes[f"{section}.{key}"] = str(Path(value).expanduser())
            continue
        candidate = base / value
        if key in ("pretrained_model_name_or_path", "vae") and not candidate.exists():
            continue
        changes[f"{section}.{key}"] = str(candidate)
    return cfg.with_values(**changes) if changes else cfg
