"""Cross-option rules: one implementation for the CLI, the wizard and the engine.

Each rule looks at the run config (and, where the rule is about captions or images, the
resolved dataset config) and returns `RuleIssue`s. An issue may carry a `fix`: the option
values that resolve it, which the wizard applies as the user toggles (and says why).
Most rules come from sd-scripts' own checks; the messages say what to change.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from engine.config.network_rules import network_errors
from engine.config.rule_issue import ERROR, WARNING, RuleIssue
from engine.config.schema import RunConfig
from engine.errors import ConfigError

# Optimizers whose update is per parameter, so stepping each one inside its gradient hook
# is the same algorithm. Prodigy estimates one step size from all parameters together.
FUSED_OPTIMIZERS = {"AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion", "Lion8bit", "PagedLion8bit",
                    "Adafactor", "SGD",
                    "SGDNesterov", "PagedAdamW", "PagedAdamW32bit"}
# sd-scripts' caption options that change the text per step, so cached text outputs would be stale.
CAPTION_AUGMENTATIONS = ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                         "token_warmup_step", "enable_wildcard")
IMAGE_AUGMENTATIONS = ("color_aug", "random_crop")


def _model_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    m = cfg.model
    if not m.pretrained_model_name_or_path:
        yield RuleIssue(ERROR, ("pretrained_model_name_or_path",),
                        "no base model: set pretrained_model_name_or_path to a Hub id, diffusers folder or "
                        ".safetensors file")
    if m.v2:
        yield RuleIssue(ERROR, ("v2",), "v2 is for SD 2.x models; SDXL training needs v2 = false", {"v2": False})
    if m.clip_skip is not None:
        yield RuleIssue(WARNING, ("clip_skip",),
                        "clip_skip is ignored for SDXL (it always uses the penultimate text-encoder layer)",
                        {"clip_skip": None})


def _caching_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    c = cfg.caching
    if c.cache_text_encoder_outputs and not cfg.network.network_train_unet_only:
        yield RuleIssue(ERROR, ("cache_text_encoder_outputs", "network_train_unet_only"),
                        "cache_text_encoder_outputs needs network_train_unet_only = true: cached text-encoder "
                        "outputs cannot carry gradients to text-encoder LoRA modules",
                        {"network_train_unet_only": True})
    if c.cache_latents_to_disk and not c.cache_latents:
        yield RuleIssue(WARNING, ("cache_latents_to_disk", "cache_latents"),
                        "cache_latents_to_disk has no effect without cache_latents; turning cache_latents on",
                        {"cache_latents": True})
    if c.cache_text_encoder_outputs_to_disk and not c.cache_text_encoder_outputs:
        yield RuleIssue(WARNING, ("cache_text_encoder_outputs_to_disk", "cache_text_encoder_outputs"),
                        "cache_text_encoder_outputs_to_disk has no effect without cache_text_encoder_outputs",
                        {"cache_text_encoder_outputs": True})


def _precision_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    p = cfg.precision
    if p.fused_backward_pass:
        if cfg.training.gradient_accumulation_steps != 1:
            yield RuleIssue(ERROR, ("fused_backward_pass", "gradient_accumulation_steps"),
                            "fused_backward_pass steps each parameter as soon as its gradient exists, so it "
                            "needs gradient_accumulation_steps = 1", {"gradient_accumulation_steps": 1})
        if cfg.optimizer.optimizer_type not in FUSED_OPTIMIZERS:
            yield RuleIssue(ERROR, ("fused_backward_pass", "optimizer_type"),
                            f"fused_backward_pass does not support {cfg.optimizer.optimizer_type} (it needs all "
                            f"gradients at once); use one of {', '.join(sorted(FUSED_OPTIMIZERS))}")
        if cfg.optimizer.max_grad_norm > 0:
            yield RuleIssue(WARNING, ("fused_backward_pass", "max_grad_norm"),
                            "with fused_backward_pass the global gradient norm is never available: max_grad_norm "
                            "clips each parameter's gradient on its own")
    if p.mixed_precision == "fp16" and not p.no_half_vae:
        yield RuleIssue(WARNING, ("mixed_precision", "no_half_vae"),
                        "SDXL's VAE overflows in fp16 (NaN latents); set no_half_vae = true with fp16",
                        {"no_half_vae": True})


def _network_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    n = cfg.network
    for keys, message in network_errors(cfg):
        yield RuleIssue(ERROR, keys, message)
    if "conv_alpha" in n.parsed_args and "conv_dim" not in n.parsed_args and n.network_module == "networks.lora":
        yield RuleIssue(WARNING, ("network_args",), "conv_alpha without conv_dim does nothing; add conv_dim=N")
    o = cfg.optimizer
    if n.network_train_unet_only and (o.text_encoder_lr1 is not None or o.text_encoder_lr2 is not None):
        yield RuleIssue(WARNING, ("text_encoder_lr1", "text_encoder_lr2", "network_train_unet_only"),
                        "text-encoder learning rates are unused with network_train_unet_only")


def _schedule_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    o, t = cfg.optimizer, cfg.training
    if o.lr_warmup_steps > 0 and o.lr_scheduler == "constant":
        # sd-scripts refuses this too ("constant does not require num_warmup_steps").
        yield RuleIssue(ERROR, ("lr_warmup_steps", "lr_scheduler"),
                        f"lr_warmup_steps = {o.lr_warmup_steps} with lr_scheduler = constant: the constant schedule "
                        "has no warm-up (sd-scripts refuses it); use constant_with_warmup or set lr_warmup_steps = 0",
                        {"lr_scheduler": "constant_with_warmup"})
    if t.max_train_steps is not None and t.max_train_epochs is not None:
        yield RuleIssue(WARNING, ("max_train_steps", "max_train_epochs"),
                        "both max_train_steps and max_train_epochs are set: max_train_steps limits the run")
    s = cfg.saving
    if s.save_last_n_epochs is not None and s.save_every_n_epochs is None:
        yield RuleIssue(WARNING, ("save_last_n_epochs", "save_every_n_epochs"),
                        "save_last_n_epochs only prunes epoch saves; set save_every_n_epochs too")
    sm = cfg.sampling
    if sm.sample_every_n_steps and sm.sample_every_n_epochs:
        yield RuleIssue(WARNING, ("sample_every_n_steps", "sample_every_n_epochs"),
                        "both sample_every_n_steps and sample_every_n_epochs are set: as in sd-scripts, only the "
                        "epoch schedule makes samples", {"sample_every_n_steps": None})
    wants_samples = sm.sample_every_n_steps or sm.sample_every_n_epochs or sm.sample_at_first
    if wants_samples and not sm.sample_prompts:
        yield RuleIssue(ERROR, ("sample_prompts",),
                        "sampling is scheduled but sample_prompts is empty: name a prompts file or turn sampling off")


# --- noise, timestep and loss options (sd-scripts `verify_training_args` and what it implies) ---
def _noise_and_loss_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    t, m = cfg.training, cfg.model
    if t.adaptive_noise_scale is not None and not t.noise_offset:
        yield RuleIssue(ERROR, ("adaptive_noise_scale", "noise_offset"),
                        f"adaptive_noise_scale = {t.adaptive_noise_scale} needs noise_offset (sd-scripts refuses it "
                        "without one); set noise_offset, e.g. 0.0357, or unset adaptive_noise_scale",
                        {"adaptive_noise_scale": None})
    if t.noise_offset_random_strength and not t.noise_offset:
        yield RuleIssue(WARNING, ("noise_offset_random_strength", "noise_offset"),
                        "noise_offset_random_strength does nothing without noise_offset")
    if t.ip_noise_gamma_random_strength and not t.ip_noise_gamma:
        yield RuleIssue(WARNING, ("ip_noise_gamma_random_strength", "ip_noise_gamma"),
                        "ip_noise_gamma_random_strength does nothing without ip_noise_gamma")
    if t.multires_noise_discount != 0.3 and not t.multires_noise_iterations:
        yield RuleIssue(WARNING, ("multires_noise_discount", "multires_noise_iterations"),
                        "multires_noise_discount does nothing without multires_noise_iterations")
    low, high = t.min_timestep or 0, 1000 if t.max_timestep is None else t.max_timestep
    if low > high or low >= 1000 or (low == high and high >= 1000):
        yield RuleIssue(ERROR, ("min_timestep", "max_timestep"),
                        f"min_timestep = {t.min_timestep} and max_timestep = {t.max_timestep}: timesteps are drawn "
                        "from min_timestep up to (not including) max_timestep, in 0..999; make min below max")
    if t.loss_type in ("l1", "l2") and (t.huber_c != 0.1 or t.huber_scale != 1.0 or t.huber_schedule != "snr"):
        yield RuleIssue(WARNING, ("huber_c", "huber_scale", "huber_schedule", "loss_type"),
                        f"huber_c / huber_scale / huber_schedule only apply to loss_type huber or smooth_l1 "
                        f"(loss_type is {t.loss_type})")
    if t.scale_v_pred_loss_like_noise_pred and not m.v_parameterization:
        yield RuleIssue(ERROR, ("scale_v_pred_loss_like_noise_pred", "v_parameterization"),
                        "scale_v_pred_loss_like_noise_pred is for v-prediction models: set v_parameterization = true "
                        "(sd-scripts refuses it otherwise) or turn it off",
                        {"scale_v_pred_loss_like_noise_pred": False})
    if t.v_pred_like_loss and m.v_parameterization:
        yield RuleIssue(ERROR, ("v_pred_like_loss", "v_parameterization"),
                        "v_pred_like_loss adds a v-prediction-like term to an epsilon loss; it cannot be used with "
                        "v_parameterization (sd-scripts refuses it); unset one", {"v_pred_like_loss": None})
    if t.weighted_captions and t.max_token_length not in (None, 75):
        yield RuleIssue(ERROR, ("weighted_captions", "max_token_length"),
                        "weighted_captions with max_token_length 150 / 225 is not supported by sdxl-tui yet; "
                        "unset max_token_length or turn weighted_captions off", {"max_token_length": None})
    for key in ("masked_loss",):
        if getattr(t, key):
            yield RuleIssue(ERROR, (key,), f"{key} = true is not supported by sdxl-tui yet: training without it "
                            f"would be a different run than asked for; set {key} = false", {key: False})
    if t.max_token_length not in (None, 75, 150, 225):
        yield RuleIssue(ERROR, ("max_token_length",),
                        f"max_token_length = {t.max_token_length}: sd-scripts takes 75 (the default), 150 or 225",
                        {"max_token_length": None})
    if m.zero_terminal_snr and not m.v_parameterization:
        yield RuleIssue(WARNING, ("zero_terminal_snr", "v_parameterization"),
                        "zero_terminal_snr without v_parameterization: at the last timestep an epsilon model has "
                        "nothing to predict from (sd-scripts warns: training will be unexpected)")


def _dataset_rules(cfg: RunConfig, dataset_config: Any) -> Iterable[RuleIssue]:
    subsets = list(dataset_config.all_subsets())
    if cfg.caching.cache_text_encoder_outputs:
        for key in CAPTION_AUGMENTATIONS:
            if any(getattr(s, key, 0) for s in subsets):
                yield RuleIssue(ERROR, ("cache_text_encoder_outputs", key),
                                f"cache_text_encoder_outputs cannot be used with {key} in the dataset config: the "
                                f"caption changes every step, so its cached encoding would be wrong; turn one off")
    if cfg.caching.cache_latents:
        for key in IMAGE_AUGMENTATIONS:
            if any(getattr(s, key, False) for s in subsets):
                yield RuleIssue(ERROR, ("cache_latents", key),
                                f"cache_latents cannot be used with {key} in the dataset config: the image changes "
                                f"every step (flip_aug is fine: both flips are cached); turn one off",
                                {"cache_latents": False})
    for index, ds in enumerate(dataset_config.datasets):
        yield from _bucket_rules(index, ds)
    yield from _unsupported_dataset_keys(dataset_config)
    yield from _validation_rules(cfg, dataset_config)


def _validation_rules(cfg: RunConfig, dataset_config: Any) -> Iterable[RuleIssue]:
    """Validation options without held-out images do nothing, in sd-scripts too: say so."""
    keys = tuple(k for k in ("validate_every_n_steps", "validate_every_n_epochs", "max_validation_steps")
                 if getattr(cfg.logging, k) is not None)
    if keys and not any(getattr(ds, "validation_split", 0) > 0 for ds in dataset_config.datasets):
        yield RuleIssue(WARNING, keys,
                        f"{', '.join(keys)} set, but the dataset config holds out no images, so no validation loss "
                        "is computed (as in sd-scripts): add validation_split = 0.1 (for example) to its [general] "
                        "table, or remove the option")


def _unsupported_dataset_keys(dataset_config: Any) -> Iterable[RuleIssue]:
    """Dataset keys sd-scripts honours and sdxl-tui cannot yet: refused before any model loads."""
    for ds in dataset_config.datasets:
        if getattr(ds, "network_multiplier", 1.0) != 1.0:
            yield RuleIssue(ERROR, ("network_multiplier",),
                            f"datasets[{ds.index}]: network_multiplier = {ds.network_multiplier} is not supported by "
                            "sdxl-tui yet (every dataset trains the LoRA at strength 1); remove it")
    for subset in dataset_config.all_subsets():
        if getattr(subset, "alpha_mask", False):
            yield RuleIssue(ERROR, ("alpha_mask",),
                            f"subset {subset.index}: alpha_mask = true is not supported by sdxl-tui yet (the loss "
                            "would ignore the transparency); remove it, or flatten the images onto a background")
        if getattr(subset, "conditioning_data_dir", None):
            yield RuleIssue(ERROR, ("conditioning_data_dir",),
                            f"subset {subset.index}: conditioning_data_dir (mask images for masked_loss) is not "
                            "supported by sdxl-tui yet; remove it")
        attributes = getattr(subset, "custom_attributes", None) or {}
        if attributes.get("diff_output_preservation"):
            yield RuleIssue(ERROR, ("custom_attributes",),
                            f"subset {subset.index}: custom_attributes.diff_output_preservation (differential output "
                            "preservation) is not supported by sdxl-tui yet; remove it")


def _bucket_rules(index: int, ds: Any) -> Iterable[RuleIssue]:
    step = ds.bucket_reso_steps
    if step % 32:
        yield RuleIssue(ERROR, ("bucket_reso_steps",),
                        f"dataset {index}: bucket_reso_steps = {step} must be a multiple of 32 for SDXL (64 is usual)")
    if not ds.enable_bucket:
        return
    resolution = ds.resolution
    width, height = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    low, high = ds.min_bucket_reso, ds.max_bucket_reso
    if low > high:
        yield RuleIssue(ERROR, ("min_bucket_reso", "max_bucket_reso"),
                        f"dataset {index}: min_bucket_reso {low} is above max_bucket_reso {high}")
    for side in (width, height):
        if not low <= side <= high:
            yield RuleIssue(ERROR, ("resolution", "min_bucket_reso", "max_bucket_reso"),
                            f"dataset {index}: resolution {width}x{height} lies outside the bucket range "
                            f"{low}..{high}; widen the range or change the resolution")
            break


def _package_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    """Optional packages the config needs (engine/config/extras.py), checked before any model loads."""
    from engine.config.extras import missing_packages

    for missing in missing_packages(cfg):
        yield RuleIssue(ERROR, (missing.row.option,), missing.message)


def _optimizer_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    from engine.config.optimizer_rules import optimizer_rules

    yield from optimizer_rules(cfg, RuleIssue, ERROR, WARNING)


def check_rules(cfg: RunConfig, dataset_config: Optional[Any] = None) -> list[RuleIssue]:
    """All issues for this config; dataset rules run when the resolved dataset config is given."""
    issues: list[RuleIssue] = []
    for rule in (_model_rules, _caching_rules, _precision_rules, _network_rules, _schedule_rules, _package_rules,
                 _optimizer_rules, _noise_and_loss_rules):
        issues.extend(rule(cfg))
    from engine.config.saving_rules import saving_rules  # issue 14; imported late: it imports this module

    issues.extend(saving_rules(cfg))
    if dataset_config is None and not cfg.dataset.dataset_config:
        issues.append(RuleIssue(ERROR, ("dataset_config",),
                                "no dataset: set dataset_config to an sd-scripts dataset TOML"))
    if dataset_config is not None:
        issues.extend(_dataset_rules(cfg, dataset_config))
    return issues


def errors(issues: Iterable[RuleIssue]) -> list[RuleIssue]:
    """Only the issues at ERROR level (those that stop a run)."""
    return [issue for issue in issues if issue.level == ERROR]


def raise_for_errors(issues: Iterable[RuleIssue], path: str = "") -> None:
    """Raise ConfigError listing every ERROR-level issue (keyed to the first one's option); no-op when there are
    none."""
    found = errors(issues)
    if found:
        lines = "\n".join(f"  - {issue.message}" for issue in found)
        raise ConfigError(f"{len(found)} conflicting or missing option(s):\n{lines}", path=path,
                          key=found[0].keys[0], hint="change the options named above")


def apply_fixes(cfg: RunConfig, issues: Iterable[RuleIssue]) -> RunConfig:
    """The config with every issue's suggested values applied (what the wizard does on toggle)."""
    changes: dict[str, Any] = {}
    for issue in issues:
        changes.update(issue.fix)
    return cfg.with_values(**changes) if changes else cfg
