"""Cross-option rules: one implementation for the CLI, the wizard and the engine.

Each rule looks at the run config (and, where the rule is about captions or images, the
resolved dataset config) and returns `RuleIssue`s. An issue may carry a `fix`: the option
values that resolve it, which the wizard applies as the user toggles (and says why).
Most rules come from sd-scripts' own checks; the messages say what to change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from engine.config.schema import RunConfig
from engine.errors import ConfigError

ERROR = "error"
WARNING = "warning"

# Optimizers whose update is per parameter, so stepping each one inside its gradient hook
# is the same algorithm. Prodigy estimates one step size from all parameters together.
FUSED_OPTIMIZERS = {"AdamW", "AdamW8bit", "PagedAdamW8bit", "Lion", "Lion8bit", "PagedLion8bit",
                    "Adafactor", "SGD"}
KNOWN_NETWORK_ARGS = {"conv_dim", "conv_alpha"}
# sd-scripts' caption options that change the text per step, so cached text outputs would be stale.
CAPTION_AUGMENTATIONS = ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate",
                         "token_warmup_step")
IMAGE_AUGMENTATIONS = ("color_aug", "random_crop")


@dataclass(frozen=True)
class RuleIssue:
    level: str
    keys: tuple[str, ...]
    message: str
    fix: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


def _model_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    m = cfg.model
    if not m.pretrained_model_name_or_path:
        yield RuleIssue(ERROR, ("pretrained_model_name_or_path",),
                        "no base model: set pretrained_model_name_or_path to a Hub id, diffusers folder or .safetensors file")
    if m.v2:
        yield RuleIssue(ERROR, ("v2",), "v2 is for SD 2.x models; SDXL training needs v2 = false", {"v2": False})
    if m.v_parameterization:
        yield RuleIssue(ERROR, ("v_parameterization",),
                        "v_parameterization is an SD 2.x flag; SDXL reads its prediction type from the model's "
                        "scheduler config, so set v_parameterization = false", {"v_parameterization": False})
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
    for key in n.parsed_args:
        if key not in KNOWN_NETWORK_ARGS:
            yield RuleIssue(WARNING, ("network_args",),
                            f"network_args key '{key}' is not used by networks.lora (known: conv_dim, conv_alpha)")
    if "conv_alpha" in n.parsed_args and "conv_dim" not in n.parsed_args:
        yield RuleIssue(WARNING, ("network_args",), "conv_alpha without conv_dim does nothing; add conv_dim=N")
    for key in ("conv_dim", "conv_alpha"):
        raw = n.parsed_args.get(key)
        if raw is not None:
            try:
                float(raw)
            except ValueError:
                yield RuleIssue(ERROR, ("network_args",), f"network_args {key}={raw!r} is not a number")
    o = cfg.optimizer
    if n.network_train_unet_only and (o.text_encoder_lr1 is not None or o.text_encoder_lr2 is not None):
        yield RuleIssue(WARNING, ("text_encoder_lr1", "text_encoder_lr2", "network_train_unet_only"),
                        "text-encoder learning rates are unused with network_train_unet_only")


def _schedule_rules(cfg: RunConfig) -> Iterable[RuleIssue]:
    o, t = cfg.optimizer, cfg.training
    if o.lr_warmup_steps > 0 and o.lr_scheduler == "constant":
        yield RuleIssue(WARNING, ("lr_warmup_steps", "lr_scheduler"),
                        "the constant scheduler ignores lr_warmup_steps; use constant_with_warmup",
                        {"lr_scheduler": "constant_with_warmup"})
    if t.max_train_steps is not None and t.max_train_epochs is not None:
        yield RuleIssue(WARNING, ("max_train_steps", "max_train_epochs"),
                        "both max_train_steps and max_train_epochs are set: max_train_steps limits the run")
    s = cfg.saving
    if s.save_last_n_epochs is not None and s.save_every_n_epochs is None:
        yield RuleIssue(WARNING, ("save_last_n_epochs", "save_every_n_epochs"),
                        "save_last_n_epochs only prunes epoch saves; set save_every_n_epochs too")
    sm = cfg.sampling
    wants_samples = sm.sample_every_n_steps or sm.sample_every_n_epochs or sm.sample_at_first
    if wants_samples and not sm.sample_prompts:
        yield RuleIssue(ERROR, ("sample_prompts",),
                        "sampling is scheduled but sample_prompts is empty: name a prompts file or turn sampling off")


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


def check_rules(cfg: RunConfig, dataset_config: Optional[Any] = None) -> list[RuleIssue]:
    """All issues for this config; dataset rules run when the resolved dataset config is given."""
    issues: list[RuleIssue] = []
    for rule in (_model_rules, _caching_rules, _precision_rules, _network_rules, _schedule_rules):
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
    return [issue for issue in issues if issue.level == ERROR]


def raise_for_errors(issues: Iterable[RuleIssue], path: str = "") -> None:
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
