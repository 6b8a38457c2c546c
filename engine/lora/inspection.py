"""Look inside a LoRA file and say where it will load: layout, parts, ranks, dtypes, broken
values, the metadata that matters, and a verdict for ComfyUI, A1111/Forge, diffusers and
sd-scripts with the reason when one fails.

Reads sd-scripts' layout (`lora_unet_…` with original or diffusers block names), diffusers /
PEFT layouts (`unet.….lora_A.weight`, older `….lora.down.weight`) and our own files.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from engine.lora.file import CONFIG_KEY, MANIFEST_HASH_KEY, addnet_model_hash

TARGETS = ("ComfyUI", "A1111/Forge", "diffusers", "sd-scripts")
KEY_METADATA = (
    "ss_base_model_version", "modelspec.architecture", "modelspec.title", "ss_network_module", "ss_network_dim",
    "ss_network_alpha", "ss_network_args", "ss_output_name", "ss_sd_model_name", "ss_steps", "ss_epoch",
    "ss_learning_rate", "ss_unet_lr", "ss_text_encoder_lr", "ss_optimizer", "ss_resolution",
    "ss_mixed_precision", "ss_seed", "ss_training_finished_at", "sshs_model_hash", MANIFEST_HASH_KEY,
    # what the metadata_* options and training_comment write (issue 14)
    "modelspec.author", "modelspec.description", "modelspec.license", "modelspec.tags", "modelspec.usage_hint",
    "modelspec.trigger_phrase", "modelspec.merged_from", "modelspec.preprocessor", "modelspec.thumbnail",
    "ss_training_comment",
)
_KOHYA_PREFIXES = ("lora_unet_", "lora_te1_", "lora_te2_", "lora_te_")
_PEFT_PREFIXES = {"unet.": "unet", "text_encoder.": "te1", "text_encoder_2.": "te2"}
_PEFT_DOWN = (".lora_A.weight", ".lora.down.weight", ".lora_linear_layer.down.weight")
_PEFT_UP = (".lora_B.weight", ".lora.up.weight", ".lora_linear_layer.up.weight")


@dataclass(frozen=True)
class ModuleInfo:
    """One LoRA module as found in a file: its part of the model, rank, alpha and layer kind."""
    name: str
    part: str  # unet / te1 / te2 / te (SD1) / other
    rank: Optional[int]
    alpha: Optional[float]
    kind: str  # linear / conv1x1 / conv3x3 / ?; for a LyCORIS file, its algorithm (loha, lokr, ...)
    problem: str = ""


@dataclass(frozen=True)
class Verdict:
    """Whether the file loads in one target (ComfyUI, A1111, diffusers, ...), and why."""
    target: str
    ok: bool
    reason: str


@dataclass
class InspectReport:
    """What inspect_lora found in a LoRA file: layout, base model, modules, dtypes, metadata, problems and per-target
    verdicts."""
    path: Path
    size_bytes: int = 0
    layout: str = "unknown"  # sd-scripts / sd-scripts (diffusers block names) / diffusers-peft / diffusers-old
    base_model: str = "unknown"  # SDXL / SD1.x-2.x / unknown
    modules: list[ModuleInfo] = field(default_factory=list)
    key_prefixes: Counter = field(default_factory=Counter)
    dtypes: Counter = field(default_factory=Counter)
    nonfinite: list[str] = field(default_factory=list)
    zero_up_modules: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        """True when the file has errors (it will not load as a LoRA)."""
        return bool(self.errors)

    def counts_by_part(self) -> dict[str, int]:
        """Module count per part (unet, te1, te2, ...)."""
        return dict(Counter(m.part for m in self.modules))

    def rank_alpha_summary(self) -> dict[tuple[str, Optional[int], Optional[float]], int]:
        """Module count per (kind, rank, alpha)."""
        return dict(Counter((m.kind, m.rank, m.alpha) for m in self.modules))

    def key_metadata(self) -> dict[str, str]:
        """The metadata entries worth showing (KEY_METADATA), where present."""
        return {k: self.metadata[k] for k in KEY_METADATA if k in self.metadata}


def _key_prefix(key: str) -> str:
    for prefix in _KOHYA_PREFIXES:
        if key.startswith(prefix):
            return prefix
    head = key.split(".", 1)[0]
    return head + "." if "." in key else key


def _kind(down_shape: tuple[int, ...]) -> str:
    if len(down_shape) == 2:
        return "linear"
    if len(down_shape) == 4:
        return "conv1x1" if tuple(down_shape[2:]) == (1, 1) else "conv3x3"
    return "?"


def _kohya_part(name: str) -> str:
    for prefix, part in (("lora_unet_", "unet"), ("lora_te1_", "te1"), ("lora_te2_", "te2"), ("lora_te_", "te")):
        if name.startswith(prefix):
            return part
    return "other"


def _peft_part(name: str) -> str:
    for prefix, part in _PEFT_PREFIXES.items():
        if name.startswith(prefix):
            return part
    return "other"


def _check_pair(name: str, down, up) -> str:
    if down is None or up is None:
        return "has " + ("no lora_up" if up is None else "no lora_down")
    if up.shape[1] != down.shape[0]:
        return f"rank differs: lora_down {tuple(down.shape)} vs lora_up {tuple(up.shape)}"
    return ""


def _kohya_modules(tensors: dict) -> tuple[list[ModuleInfo], list[str]]:
    names = sorted({k.split(".", 1)[0] for k in tensors if k.startswith(_KOHYA_PREFIXES)})
    modules, stray = [], []
    for name in names:
        down, up = tensors.get(f"{name}.lora_down.weight"), tensors.get(f"{name}.lora_up.weight")
        alpha = tensors.get(f"{name}.alpha")
        known = {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha", f"{name}.dora_scale"}
        stray += [k for k in tensors if k.startswith(name + ".") and k not in known]
        problem = _check_pair(name, down, up)
        rank = int(down.shape[0]) if down is not None else None
        modules.append(ModuleInfo(name, _kohya_part(name), rank, float(alpha) if alpha is not None else None,
                                  _kind(tuple(down.shape)) if down is not None else "?", problem))
    return modules, stray


def _peft_modules(tensors: dict) -> list[ModuleInfo]:
    modules = []
    for key in sorted(tensors):
        suffix = next((s for s in _PEFT_DOWN if key.endswith(s)), None)
        if suffix is None:
            continue
        name = key[: -len(suffix)]
        up_suffix = _PEFT_UP[_PEFT_DOWN.index(suffix)]
        down, up = tensors[key], tensors.get(name + up_suffix)
        alpha = tensors.get(name + ".alpha")
        modules.append(ModuleInfo(name, _peft_part(name), int(down.shape[0]),
                                  float(alpha) if alpha is not None else None, _kind(tuple(down.shape)),
                                  _check_pair(name, down, up)))
    return modules


def _layout(tensors: dict, metadata: Optional[dict] = None) -> str:
    from engine.lora.lycoris_keys import is_lycoris

    keys = list(tensors)
    if any(k.startswith(_KOHYA_PREFIXES) for k in keys) and is_lycoris(keys, metadata or {}):
        return "lycoris"
    if any(k.startswith(_KOHYA_PREFIXES) for k in keys):
        unet = [k for k in keys if k.startswith("lora_unet_")]
        if unet and not any(re.match(r"lora_unet_(input_blocks|middle_block|output_blocks)_", k) for k in unet):
            return "sd-scripts (diffusers block names)"
        return "sd-scripts"
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return "diffusers-peft"
    if any(".lora.down." in k or ".lora_linear_layer." in k for k in keys):
        return "diffusers-old"
    return "unknown"


def _base_model(tensors: dict, metadata: dict[str, str]) -> str:
    version = metadata.get("ss_base_model_version", "") + metadata.get("modelspec.architecture", "")
    if "sdxl" in version or "stable-diffusion-xl" in version:
        return "SDXL"
    keys = list(tensors)
    if any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys):
        return "SDXL"
    # Only SDXL has 10 transformer layers per block (transformer_blocks_9).
    if any(re.search(r"transformer_blocks[._]9[._]", k) for k in keys):
        return "SDXL"
    if any(k.startswith("lora_te_") for k in keys) or version.startswith(("sd_v1", "sd_v2")):
        return "SD1.x-2.x"
    return "unknown"


def _verdicts(report: InspectReport) -> list[Verdict]:
    if report.broken:
        reason = "the file is broken: " + report.errors[0]
        return [Verdict(t, False, reason) for t in TARGETS]
    if report.base_model == "SD1.x-2.x":
        return [Verdict(t, False, "this is an SD 1.x/2.x LoRA (single text encoder `lora_te_`), not SDXL")
                for t in TARGETS]
    layout = report.layout
    if layout == "lycoris":
        algos = sorted({m.kind for m in report.modules})
        plain = set(algos) <= {"lora/locon"}
        return [
            Verdict("ComfyUI", True, f"ComfyUI loads LyCORIS ({', '.join(algos)}) with lora_unet_ names"),
            Verdict("A1111/Forge", True, "the built-in Lora extension (A1111 1.5+, Forge) loads LyCORIS"),
            Verdict("diffusers", plain, "diffusers' kohya converter reads lora_down/lora_up" if plain else
                    "diffusers' kohya converter reads only lora_down/lora_up, not " + ", ".join(algos)),
            Verdict("sd-scripts", True, "as network_weights with network_module = lycoris.kohya "
                                        "(LyCORIS installed) and the same network_args"),
        ]
    if layout == "sd-scripts":
        return [Verdict(t, True, "sd-scripts layout with original SDXL block names") for t in TARGETS]
    if layout == "sd-scripts (diffusers block names)":
        return [
            Verdict("ComfyUI", True, "ComfyUI maps lora_unet_ + diffusers module names"),
            Verdict("A1111/Forge", True, "A1111 converts diffusers-style lora_unet_down_blocks_ names"),
            Verdict("diffusers", True, "diffusers' kohya converter reads diffusers block names"),
            Verdict("sd-scripts", False, "sd-scripts' SDXL UNet uses original block names (input_blocks_…); "
                                          "these modules would be silently skipped as network_weights"),
        ]
    if layout in ("diffusers-peft", "diffusers-old"):
        return [
            Verdict("ComfyUI", True, "ComfyUI reads diffusers/PEFT key names (unet., text_encoder.)"),
            Verdict("A1111/Forge", False, "A1111 expects sd-scripts names (lora_unet_…, lora_te1_…); "
                                           "PEFT names give 'lora key not loaded' — convert the file first"),
            Verdict("diffusers", True, "native diffusers/PEFT layout"),
            Verdict("sd-scripts", False, "sd-scripts reads only lora_unet_/lora_te1_/lora_te2_ keys "
                                          "with lora_down/lora_up/alpha"),
        ]
    return [Verdict(t, False, "no LoRA keys this tool recognises") for t in TARGETS]


def _check_values(report: InspectReport, tensors: dict) -> None:
    import torch

    for key, value in tensors.items():
        report.dtypes[str(value.dtype).removeprefix("torch.")] += 1
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            report.nonfinite.append(key)
    if report.nonfinite:
        report.errors.append(f"{len(report.nonfinite)} tensors hold NaN or Inf (e.g. {report.nonfinite[0]})")
    ups = [v for k, v in tensors.items() if k.endswith(("lora_up.weight", "lora_B.weight", ".up.weight"))]
    report.zero_up_modules = sum(1 for v in ups if not bool(v.any()))
    if ups and report.zero_up_modules == len(ups):
        report.warnings.append("every lora_up weight is zero: the LoRA changes nothing "
                               "(saved before any training step?)")
    elif report.zero_up_modules:
        report.warnings.append(f"{report.zero_up_modules} of {len(ups)} modules have an all-zero lora_up (no effect)")


def _check_metadata(report: InspectReport, data: bytes) -> None:
    md = report.metadata
    stored = md.get("sshs_model_hash")
    if stored and stored != addnet_model_hash(data):
        report.warnings.append("sshs_model_hash does not match the tensors: they were changed after training")
    dim = md.get("ss_network_dim")
    ranks = {m.rank for m in report.modules if m.kind != "conv3x3" and m.rank is not None}
    if dim and dim.isdigit() and ranks and ranks != {int(dim)}:
        report.warnings.append(f"metadata says network_dim {dim} but the tensors have rank {sorted(ranks)}")


def inspect_lora(path: str | Path) -> InspectReport:
    """Check a LoRA .safetensors file without a model: its layout and key names, ranks and alphas, non-finite values,
    metadata, and whether ComfyUI, A1111 and diffusers will load it. Never raises for a bad file: problems are in
    the report's `errors`."""
    from safetensors.torch import load

    report = InspectReport(Path(path))
    p = report.path
    if not p.is_file():
        report.errors.append(f"file not found: {p}")
        report.verdicts = _verdicts(report)
        return report
    data = p.read_bytes()
    report.size_bytes = len(data)
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        report.metadata = dict(header.get("__metadata__") or {})
        tensors = load(data)
    except Exception as exc:
        report.errors.append(f"not a readable safetensors file ({type(exc).__name__}: {str(exc)[:120]})")
        report.verdicts = _verdicts(report)
        return report
    report.key_prefixes = Counter(_key_prefix(k) for k in tensors)
    report.layout = _layout(tensors, report.metadata)
    report.base_model = _base_model(tensors, report.metadata)
    if report.layout == "lycoris":
        from engine.lora.lycoris_keys import module_algos

        report.modules = [ModuleInfo(name, _kohya_part(name), rank, alpha, algo)
                          for name, (algo, rank, alpha) in sorted(module_algos(tensors).items())]
    elif report.layout.startswith("sd-scripts"):
        report.modules, stray = _kohya_modules(tensors)
        if stray:
            report.warnings.append(f"{len(stray)} keys are not lora_down/lora_up/alpha (e.g. {stray[0]})")
    elif report.layout.startswith("diffusers"):
        report.modules = _peft_modules(tensors)
    else:
        report.errors.append("no LoRA keys found (expected lora_unet_…/lora_te1_… or unet.….lora_A.weight)")
    incomplete = [m for m in report.modules if m.problem]
    if incomplete:
        report.errors.append(f"{len(incomplete)} modules are incomplete: {incomplete[0].name} {incomplete[0].problem}")
    _check_values(report, tensors)
    _check_metadata(report, data)
    report.verdicts = _verdicts(report)
    return report


def _fmt_alpha(alpha: Optional[float]) -> str:
    return "-" if alpha is None else f"{alpha:g}"


def format_report(report: InspectReport) -> str:
    """Plain text for the terminal."""
    lines = [f"{report.path}  ({report.size_bytes / 1e6:.2f} MB)",
             f"layout: {report.layout}    base model: {report.base_model}"]
    if report.modules:
        parts = report.counts_by_part()
        lines.append("modules: " + ", ".join(f"{part} {count}" for part, count in sorted(parts.items())))
        lines.append("key prefixes: " + ", ".join(f"{p} ({n} keys)" for p, n in sorted(report.key_prefixes.items())))
        lines.append("rank / alpha:")
        for (kind, rank, alpha), count in sorted(report.rank_alpha_summary().items(), key=lambda i: str(i[0])):
            lines.append(f"  {kind:8} rank {rank}  alpha {_fmt_alpha(alpha)}  × {count}")
        lines.append("dtypes: " + ", ".join(f"{d} ({n})" for d, n in sorted(report.dtypes.items())))
        lines.append("values: " + ("NaN/Inf found" if report.nonfinite else "all finite")
                     + (f"; {report.zero_up_modules} all-zero lora_up" if report.zero_up_modules else ""))
    meta = report.key_metadata()
    if meta:
        lines.append("metadata:")
        lines += [f"  {k} = {v if len(v) <= 100 else v[:97] + '...'}" for k, v in meta.items()]
    if CONFIG_KEY in report.metadata:
        lines.append(f"  {CONFIG_KEY}: run config stored, paths as base names (the full one is the run's config.toml)")
    lines.append("will it load?")
    for verdict in report.verdicts:
        lines.append(f"  {'yes' if verdict.ok else 'NO ':3}  {verdict.target:12} {verdict.reason}")
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"error: {e}" for e in report.errors]
    return "\n".join(lines)


def report_as_dict(report: InspectReport) -> dict[str, Any]:
    """JSON-friendly summary for scripts (`sdxl-tui inspect --json`)."""
    return {
        "path": str(report.path), "size_bytes": report.size_bytes, "layout": report.layout,
        "base_model": report.base_model, "modules": report.counts_by_part(),
        "key_prefixes": dict(report.key_prefixes), "dtypes": dict(report.dtypes),
        "rank_alpha": [{"kind": k, "rank": r, "alpha": a, "count": n}
                       for (k, r, a), n in report.rank_alpha_summary().items()],
        "nonfinite": report.nonfinite, "zero_up_modules": report.zero_up_modules,
        "metadata": report.key_metadata(), "has_config": CONFIG_KEY in report.metadata,
        "verdicts": [{"target": v.target, "ok": v.ok, "reason": v.reason} for v in report.verdicts],
        "warnings": report.warnings, "errors": report.errors, "broken": report.broken,
    }
