#!/usr/bin/env bash
# Installs the lab into the virtual environment whose python is $1.
# On a machine without an NVIDIA GPU, the CPU build of torch goes in first, so the
# project's `torch>=2.5` requirement is already met and pip never pulls a multi-GB
# CUDA build. On a GPU machine pip takes the normal (CUDA) build from PyPI.
set -euo pipefail
PY=${1:?usage: install.sh PATH/TO/python}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install: NVIDIA GPU found; torch comes from PyPI with CUDA"
  else
    echo "install: no NVIDIA GPU; installing the CPU build of torch ${TORCH_CPU_VERSION}"
    # pip as configured on this machine (pip.conf, PIP_INDEX_URL, PIP_FIND_LINKS) finds the
    # CPU wheel: "+cpu" where an index or folder serves it under that local version, else
    # the plain version. TORCH_INDEX_URL, when set, is an extra index to look in (for
    # example PyTorch's own CPU wheel index).
    extra=()
    if [[ -n "${TORCH_INDEX_URL:-}" ]]; then extra=(--extra-index-url "$TORCH_INDEX_URL"); fi
    "$PY" -m pip install -q "${extra[@]}" "torch==${TORCH_CPU_VERSION}+cpu" 2>/dev/null \
      || "$PY" -m pip install -q "${extra[@]}" "torch==${TORCH_CPU_VERSION}"
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
"$PY" - <<'PYEOF'
import torch, triton, hydra
print(f"install: torch {torch.__version__} (cuda={torch.cuda.is_available()}), "
      f"triton {triton.__version__}, hydra {hydra.__version__}")
PYEOF
