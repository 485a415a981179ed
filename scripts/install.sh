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
    # The local-version pin finds a CPU wheel in pip's configured find-links or
    # indexes; elsewhere PyTorch's own CPU index serves it.
    "$PY" -m pip install -q "torch==${TORCH_CPU_VERSION}+cpu" \
      || "$PY" -m pip install -q "torch==${TORCH_CPU_VERSION}" \
           --index-url https://download.pytorch.org/whl/cpu \
           --extra-index-url https://pypi.org/simple
  fi
fi
"$PY" -m pip install -q -e ".[dev]"
"$PY" - <<'PYEOF'
import torch, triton, hydra
print(f"install: torch {torch.__version__} (cuda={torch.cuda.is_available()}), "
      f"triton {triton.__version__}, hydra {hydra.__version__}")
PYEOF
