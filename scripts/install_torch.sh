#!/usr/bin/env bash
# Install torch into the given Python only when it is missing.
# A GPU box keeps (or gets) its usual CUDA build; a machine without a GPU gets the CPU build,
# which is a local file on our CI machines (an unpinned `torch` would pull several GB of CUDA).
set -euo pipefail
py=${1:-python3}
if "$py" -c "import torch" >/dev/null 2>&1; then exit 0; fi
if command -v nvidia-smi >/dev/null 2>&1; then
  "$py" -m pip install torch
else
  "$py" -m pip install "torch==${SDXL_TUI_CPU_TORCH:-2.13.0}" || "$py" -m pip install torch --index-url https://download.pytorch.org/whl/cpu
fi
