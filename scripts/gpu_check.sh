#!/usr/bin/env bash
# The GPU check, sized for a short GPU window (about 15 minutes, start-up included): two
# calls of at most 9 minutes each, every stage under its own time limit, every table row
# printed and appended to its CSV as it is measured, so a stage cut short keeps what it
# finished. Everything lands in $OUT (default runs/gpu_check).
#
#   bash scripts/gpu_check.sh --dry-run [STAGE ...]   what would run, and its time estimate
#   bash scripts/gpu_check.sh                          first call:  smoke layernorm gemm attention
#   bash scripts/gpu_check.sh conv gpt2                second call
#   bash scripts/gpu_check.sh STAGE ...                any stages, in the order given
#
# Stages (estimate; limit):
#   smoke      bf16 on CUDA, every op, one or two shapes (tests/kernels/test_gpu_smoke.py),
#              one tile per kernel (KERNELS_AUTOTUNE=0)                           (~2 min; 130 s)
#   layernorm  the layer-norm table (4 shapes; not autotuned)                       (~1 min; 60 s)
#   gemm       the reduced GEMM table (--quick: 8192³, two GPT-2 shapes, plain and fused
#              bias + GELU, two weight gradients), 3 tiles tuned per shape          (~2 min; 130 s)
#   attention  the reduced attention table (--quick: T = 4k at D = 64 and 128, causal and
#              not, D = 128 causal at 1k and 16k), 2 tiles tuned per kernel       (~3.5 min; 220 s)
#   conv       the causal-convolution table                                       (~1 min; 90 s)
#   gpt2       a GPT-2 small training step, the lab on Triton kernels against a
#              torch.compile'd plain loop: the real 50,257 vocabulary, B = 32, T = 1024,
#              bf16 (the anchors' setting)                                        (~4 min; 300 s)
#   tests      every kernel test on CUDA (long: fp32 builds in IEEE precision), for a
#              window of its own                                                      (540 s)
#
# Compiled kernels are cached in runs/triton-cache (TRITON_CACHE_DIR), which stays on the
# machine between calls, so the second call reuses the first one's builds. On the lent
# H200, from this checkout: run ../shared/device/stage-wheels.sh here once and carry
# [".whl"]; the script installs the hydra/omegaconf wheels when the machine lacks them.
set -uo pipefail
cd "$(dirname "$0")/.."

# Estimates from the builds each stage needs (about 2-3 s per bf16 kernel on one core) and
# the timings it takes; no GPU has run them yet: the first run's log says how close they are.
declare -A ESTIMATE=([smoke]=110 [layernorm]=45 [gemm]=110 [attention]=200 [conv]=60 [gpt2]=240 [tests]=540)
declare -A LIMIT=([smoke]=130 [layernorm]=60 [gemm]=130 [attention]=220 [conv]=90 [gpt2]=300 [tests]=540)
FIRST_CALL=(smoke layernorm gemm attention)
WINDOW=540  # seconds a call may take: 9 minutes

dry_run=0
stages=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *)
      if [ -z "${LIMIT[$arg]+x}" ]; then
        echo "gpu_check: unknown stage '$arg' (${!LIMIT[*]})" >&2
        exit 2
      fi
      stages+=("$arg") ;;
  esac
done
[ ${#stages[@]} -eq 0 ] && stages=("${FIRST_CALL[@]}")

total_estimate=0
total_limit=0
for stage in "${stages[@]}"; do
  total_estimate=$((total_estimate + ESTIMATE[$stage]))
  total_limit=$((total_limit + LIMIT[$stage]))
done
if [ "$dry_run" = 1 ]; then
  printf '%-10s %9s %9s\n' stage estimate limit
  for stage in "${stages[@]}"; do
    printf '%-10s %8ss %8ss\n' "$stage" "${ESTIMATE[$stage]}" "${LIMIT[$stage]}"
  done
  printf '%-10s %8ss %8ss   (a call may take %ss)\n' total "$total_estimate" "$total_limit" "$WINDOW"
  [ "$total_limit" -le "$WINDOW" ] || { echo "gpu_check: these stages may overrun one call"; exit 1; }
  exit 0
fi

OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/runs/triton-cache}
if ! python3 -c "import hydra" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
{
  date -u +%Y-%m-%dT%H:%MZ
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__)"
  echo "stages: ${stages[*]} (limits ${total_limit}s in all)"
} 2>&1 | tee -a "$OUT/env.txt"

status=0
for stage in "${stages[@]}"; do
  start=$(date +%s)
  limit=${LIMIT[$stage]}
  case "$stage" in
    smoke)
      KERNELS_AUTOTUNE=0 timeout "$limit" python3 -m pytest -q -p no:cacheprovider -m gpu \
        tests/kernels/test_gpu_smoke.py 2>&1 | tee "$OUT/smoke.log" ;;
    layernorm|conv)
      timeout "$limit" python3 -m kernels.bench "$stage" --csv "$OUT/bench_$stage.csv" \
        2>&1 | tee "$OUT/bench_$stage.log" ;;
    gemm)
      KERNELS_AUTOTUNE_MAX=3 timeout "$limit" python3 -m kernels.bench gemm --quick \
        --csv "$OUT/bench_gemm.csv" 2>&1 | tee "$OUT/bench_gemm.log" ;;
    attention)
      KERNELS_AUTOTUNE_MAX=2 timeout "$limit" python3 -m kernels.bench attention --quick \
        --csv "$OUT/bench_attention.csv" 2>&1 | tee "$OUT/bench_attention.log" ;;
    gpt2)
      KERNELS_AUTOTUNE_MAX=2 timeout "$limit" python3 -m lab.cli.bench --gpt2 --backend triton \
        --steps 10 --rounds 3 2>&1 | tee "$OUT/bench_gpt2.log" ;;
    tests)
      timeout "$limit" python3 -m pytest -q -p no:cacheprovider tests/kernels \
        --deselect tests/kernels/test_compile_check.py 2>&1 | tee "$OUT/tests.log" ;;
  esac
  rc=${PIPESTATUS[0]}
  echo "gpu_check: $stage exit $rc after $(( $(date +%s) - start ))s (limit ${limit}s)" \
    | tee -a "$OUT/env.txt"
  [ "$rc" = 0 ] || status=1
done
echo "gpu_check: exit $status; logs and CSVs in $OUT"
exit $status
