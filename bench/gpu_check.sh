#!/usr/bin/env bash
# One-call GPU check for a bare GPU machine: versions, build of the CUDA extension, the GPU
# tests, the search-step benchmarks (NB201, DARTS, ImageNet-scale DARTS), then the reproduction
# run (a 50-epoch NB201 search on the CIFAR-10 copy with benchmark lookup, fp32, each training
# step replayed from a CUDA graph), then the mixed-op and merged-convolution microbenchmarks,
# in about 9.5 minutes.
#
#   bash bench/gpu_check.sh                                  # writes into $OUT (default ./gpu_out)
#   E2E_EPOCHS=0 bash bench/gpu_check.sh                     # skip the reproduction run
#   STAGES="e2e" E2E_LEVELS="single bilevel" bash bench/gpu_check.sh   # a second call: both searches
#
# The reproduction needs .devdata/cifar10-jpeg/train.npz and .devdata/nb201/ (copied from
# ../shared/data into the git-ignored .devdata/ and named in the device tool's `carry`).
# Every stage runs under `timeout`, shrunk to what is left of BUDGET_S (default 570 s), and a
# failed stage does not stop the next.  Everything is appended to $OUT/gpu_check.log; the
# benchmark tables and a stage summary are printed again at the very end (a caller that keeps
# only the tail of the output still gets them).  JSON results land in $OUT.
#
# Environment: OUT, BUDGET_S, STAGES (default "all"; else a list of: versions backends gpu-tests
# step-nb201 step-darts step-imagenet e2e mixed-op conv-merge; the build always runs), E2E_EPOCHS (0 = skip),
# E2E_LEVELS (optimizer levels searched end to end, default "single"), PYTHON (default python3),
# SDARTS_DATA (default .devdata), STEP_COMPILE=1 (also time torch.compile in the search step),
# MIXED_OP_COMPILE (cases that time torch.compile in mixed_op.py; default "sum").
set -u
cd "$(dirname "$0")/.."

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
STAGES_DIR=$(mktemp -d)  # per-stage logs stay out of $OUT (only 8 files come back)
BUDGET_S=${BUDGET_S:-570}
RESERVE_S=10         # kept for the final summary
E2E_EPOCHS=${E2E_EPOCHS:-50}
PY=${PYTHON:-python3}
export SDARTS_DATA=${SDARTS_DATA:-.devdata}
export PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0   # compiled Triton on the GPU (the tests default to the interpreter otherwise)
export MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
START=$(date +%s)
SUMMARY=()
: >"$LOG"

# stage NAME LIMIT_S COMMAND...: run COMMAND under timeout, log it, record its outcome.
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET_S - RESERVE_S - ($(date +%s) - START)))
    if ((left < 15)); then
        SUMMARY+=("| $name | skipped: budget spent | 0 |")
        return
    fi
    ((limit > left)) && limit=$left
    echo "=== [$name] limit ${limit}s: $*" | tee -a "$LOG"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" "$STAGES_DIR/$(printf %02d ${#SUMMARY[@]})-$name.log"
    local rc=${PIPESTATUS[0]} status
    case $rc in
        0) status=ok ;;
        124 | 137) status="TIMEOUT after ${limit}s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    SUMMARY+=("| $name | $status | $(($(date +%s) - t0)) |")
}

versions() {
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    "$PY" - <<'EOF'
import platform, torch
try:
    import triton
    triton_version = triton.__version__
except ImportError:
    triton_version = None
print(f"python {platform.python_version()}  torch {torch.__version__} (CUDA {torch.version.cuda})  triton {triton_version}")
print(f"cuda available: {torch.cuda.is_available()}  device: {torch.cuda.get_device_name() if torch.cuda.is_available() else None}")
EOF
}

gpu_tests() {
    local files=() f
    for f in tests/test_kernels_triton.py tests/test_kernels_cpp.py tests/test_kernels_cuda.py tests/test_mixed_sum.py \
        tests/test_mixed_op.py tests/test_normalized_edge.py tests/test_graphed_step.py; do
        [[ -f $f ]] && files+=("$f")
    done
    local parallel=()
    "$PY" -c "import xdist" 2>/dev/null && parallel=(-n 8)  # Triton compiles dominate: spread them
    "$PY" -m pytest -q "${parallel[@]}" "${files[@]}" -k "cuda or gpu or triton" -p no:cacheprovider
}

export PY
export -f versions gpu_tests  # so that `timeout` can run them through bash

# wanted NAME: whether STAGES (default: every stage) names this stage.
wanted() { [[ " ${STAGES:-all} " == *" all "* || " ${STAGES:-all} " == *" $1 "* ]]; }

# Order = priority within the budget: correctness, the search-step tables, then the
# reproduction, then the microbenchmark.  `build` always runs (the rest needs it).
wanted versions && stage versions 30 bash -c versions
stage build 180 "$PY" -m pip install --no-build-isolation --no-deps -e .
wanted backends && stage backends 20 "$PY" -m sdarts
wanted gpu-tests && stage gpu-tests 75 bash -c gpu_tests
# Cheap variants first: a stage cut short by its timeout still leaves its JSON rows so far.
compile=()
[[ ${STEP_COMPILE:-0} == 1 ]] && compile=(compile)
wanted step-nb201 && stage step-nb201 90 "$PY" bench/search_step.py --space nb201 --device cuda \
    --json "$OUT/search_step_nb201.json" --steps 20 --warmup 5 --variant-timeout 60 --variants plain engine-cuda \
    engine-triton cuda-graph plain-cuda-graph cuda-graph-edge triton-edge all-fast channels-last amp fused-opt \
    recompute recompute-1x1 engine-reference "${compile[@]}"
wanted step-darts && stage step-darts 55 "$PY" bench/search_step.py --space darts --device cuda \
    --json "$OUT/search_step_darts.json" --steps 10 --warmup 4 --variant-timeout 60 --variants plain engine-cuda \
    cuda-graph plain-cuda-graph cuda-graph-edge all-fast engine-triton channels-last amp recompute-sep-cl "${compile[@]}"
wanted step-imagenet && stage step-imagenet 40 "$PY" bench/search_step.py --space darts-imagenet --device cuda \
    --json "$OUT/search_step_darts_imagenet.json" --steps 5 --warmup 3 --variants plain engine-cuda all-fast
if ((E2E_EPOCHS > 0)) && wanted e2e; then
    for level in ${E2E_LEVELS:-single}; do
        activation=sigmoid  # Single-DARTS; the DARTS baseline (bilevel) is softmax as in the paper's table
        [[ $level == bilevel* ]] && activation=softmax
        runs=$(mktemp -d)
        stage "e2e-$level" 600 "$PY" bench/search_e2e.py --device cuda --cuda-graph --epochs "$E2E_EPOCHS" \
            --optimizer-level "$level" --activation "$activation" --json "$OUT/search_e2e_$level.json" --data-dir "$SDARTS_DATA/cifar10-jpeg" \
            --nb201-table "$SDARTS_DATA/nb201/nb201_200ep_accuracies.csv" --out-root "$runs"
        # Per-epoch records survive a run cut short by the budget (the JSON is written at the end).
        metrics=$(find "$runs" -name metrics.jsonl | head -n 1)
        [[ -n $metrics ]] && cp "$metrics" "$OUT/search_e2e_${level}_metrics.jsonl"
    done
fi
read -r -a compile_cases <<<"${MIXED_OP_COMPILE:-sum}"
wanted mixed-op && stage mixed-op 90 "$PY" bench/mixed_op.py --device cuda --json "$OUT/mixed_op.json" \
    --compile-cases "${compile_cases[@]}"
# Its table is in the log (no JSON: only 8 files come back from $OUT, and the e2e stages need theirs).
wanted conv-merge && stage conv-merge 30 "$PY" bench/conv_merge.py --device cuda

# The tables again (each from its first '## ' heading), then the stage summary, last.
{
    echo
    echo "################ results ################"
    for log in "$STAGES_DIR"/*.log; do
        [[ -f $log ]] && sed -n '/^## /,$p' "$log"
    done
    echo
    echo "## gpu_check stages ($(($(date +%s) - START)) s of a ${BUDGET_S} s budget; log: $LOG)"
    echo
    echo "| stage | status | seconds |"
    echo "| --- | --- | --- |"
    printf '%s\n' "${SUMMARY[@]}"
} | tee -a "$LOG"
rm -rf "$STAGES_DIR"
