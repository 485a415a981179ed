#!/usr/bin/env bash
# The GPU check: the kernel tests on CUDA (bf16 included) and the benchmark tables.
# Everything it prints also lands in $OUT (default runs/gpu_check). On the lent H200, from
# this checkout: run ../shared/device/stage-wheels.sh here once, carry [".whl"], and run
#   bash scripts/gpu_check.sh [STAGE ...]
# STAGE: tests | layernorm | gemm | attention | conv | gpt2 (default: all, in that order). A lent
# GPU gives about 15 minutes in all, start-up included; all stages together may need more
# (the attention table autotunes every kernel for each of its 8 variants), so a short lease
# runs them in two calls, e.g. `tests layernorm gemm` and then `attention gpt2`.
# It installs the carried hydra/omegaconf wheels when the machine lacks them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import hydra" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(tests layernorm gemm attention conv gpt2)
{
  date -u +%Y-%m-%dT%H:%MZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
  echo "stages: ${stages[*]}"
} 2>&1 | tee -a "$OUT/env.txt"

status=0
for stage in "${stages[@]}"; do
  case "$stage" in
    tests)
      # KERNELS_AUTOTUNE=0: one tile per kernel (the tile-shape test still runs every
      # tuned one); the benchmarks autotune.
      # (the sm_90 build check is CPU work, done before any GPU is lent: deselected here)
      KERNELS_AUTOTUNE=0 timeout 480 python3 -m pytest -q -p no:cacheprovider tests/kernels \
        --deselect tests/kernels/test_compile_check.py \
        2>&1 | tee "$OUT/tests.log" || status=1 ;;
    layernorm|gemm|attention|conv)
      timeout 420 python3 -m kernels.bench "$stage" --csv "$OUT/bench_$stage.csv" \
        2>&1 | tee "$OUT/bench_$stage.log" || status=1 ;;
    gpt2)
      # GPT-2 small training step: the lab on Triton kernels vs a torch.compile'd plain loop
      timeout 240 python3 -m lab.bench --gpt2 --backend triton --steps 10 --rounds 3 \
        2>&1 | tee "$OUT/bench_gpt2.log" || status=1 ;;
    *) echo "gpu_check: unknown stage $stage (tests|layernorm|gemm|attention|conv|gpt2)"; status=2 ;;
  esac
done
echo "gpu_check: exit $status; logs in $OUT"
exit $status
