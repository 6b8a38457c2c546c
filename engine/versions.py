"""The versions of sdxl-tui and the libraries that decide what a run computes, recorded in
`events.jsonl` (RunStarted.versions) and in every LoRA's metadata (`sdxl_tui.versions`), so a
result can be traced to the software that made it. Reads package metadata only: no imports."""
from __future__ import annotations

import json
import sys
from importlib import metadata

PACKAGES = ("sdxl-tui", "torch", "diffusers", "transformers", "accelerate", "bitsandbytes")
VERSIONS_KEY = "sdxl_tui.versions"


def package_version(name: str) -> str:
    """The installed version of distribution `name`, or "not installed"."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def sdxl_tui_version() -> str:
    """The installed sdxl-tui version, or "not installed"."""
    return package_version("sdxl-tui")


def library_versions() -> dict[str, str]:
    """package -> version for PACKAGES, plus `cuda` (torch's CUDA build, "none" for a CPU build)
    and `python`. torch is asked for its CUDA version only when it is already imported."""
    found = {name: package_version(name) for name in PACKAGES}
    torch = sys.modules.get("torch")
    if torch is not None:
        found["cuda"] = str(getattr(torch.version, "cuda", None) or "none")
    found["python"] = sys.version.split()[0]
    return found


def version_metadata() -> dict[str, str]:
    """The LoRA metadata entry: {VERSIONS_KEY: JSON of library_versions()}."""
    return {VERSIONS_KEY: json.dumps(library_versions(), sort_keys=True)}
