#!/usr/bin/env bash
# The GPU check, for a bare H100/H200 machine lent for about 15 minutes (start-up included):
# versions, the build, a smoke stage (one step of every search-step variant, one line each),
# the go/no-go test (a captured search step trains as the eager one), the search-step tables,
# the GPU tests, the microbenchmarks, and (second call) the 50-epoch NB201 reproduction.
#
# The two planned device calls (bench/results/README.md, "Next GPU run"; data for call 2: the
# CIFAR-10 JPEG copy's train.npz and test.npz in .devdata/cifar10-jpeg/ and
# nb201_200ep_accuracies.csv in .devdata/nb201/, copied from ../shared/data; 59.5 MB):
#   1. command "BUDGET_S=345 E2E_EPOCHS=0 bash bench/gpu_check.sh", carry [], timeout_s 375
#   2. at once after it (the machine stays warm 30 s: no new start, and the build is skipped):
#      command "STAGES=e2e BUDGET_S=380 bash bench/gpu_check.sh", carry [".devdata"], timeout_s 410
#      (better: BUDGET_S = status.budget_left_s - 40, timeout_s = BUDGET_S + 30, at most 600)
#      (if the machine went back meanwhile: a new start (~90 s) and a rebuild (~60 s), so
#      BUDGET_S = status.budget_left_s - 180 and timeout_s = BUDGET_S + 30)
# timeout_s is above BUDGET_S on purpose: the script stops its stages by BUDGET_S - RESERVE_S, then
# copies the per-epoch metrics and the run directory and prints the summary; the device's own
# timeout must not cut that.
#
#   DRY_RUN=1 BUDGET_S=345 bash bench/gpu_check.sh      # print the stage plan and limits; run nothing
#
# The plan: each stage has a limit (seconds, below).  In priority order, the stages whose limits
# fit in BUDGET_S - RESERVE_S are "planned"; the others run only if time is left when their turn
# comes (earlier stages ending under their limits), under the time left.  A stage starts only
# with at least MIN_STAGE_S left.  A failed or timed-out stage does not stop the next.
#
# Build: skipped when "import sdarts._C" already works with its CUDA kernels (a warm machine keeps
# the ignored build outputs and the editable install between calls); a carried sdarts/_C*.so is
# registered without rebuilding it (SDARTS_NO_EXTENSION=1); if the build fails, the package is
# installed without the extension, else PYTHONPATH=$PWD, so that the PyTorch and Triton stages
# still report.  Call 1 copies the built extension into $OUT (for a later, fresh machine).
#
# Output: everything goes to $OUT/gpu_check.log; only the last 12,000 characters of stdout come
# back from the device, so the final block (under 10,000 characters) repeats what matters, the
# most important last: the step tables, the GPU-test failures, the smoke failures, the go/no-go
# lines, the e2e epochs, then the stage summary.  JSON results land in $OUT (8 files at most).
#
# Environment: OUT (default ./gpu_out), BUDGET_S (default 345), RESERVE_S (default 15),
# MIN_STAGE_S (20), BUILD=0 (skip the build: the package is installed), COPY_EXTENSION=0 (do not
# return the built extension), STAGES (default "all"; else a list of: versions smoke go-no-go step-nb201
# gpu-tests step-darts step-imagenet mixed-op conv-merge e2e; the build always runs), DRY_RUN=1,
# E2E_EPOCHS (default 50; 0 = no e2e), E2E_LEVELS (default "single"; "single bilevel" adds the
# DARTS baseline), E2E_EVAL_BATCH (the per-epoch evaluation's batch, default 2048), PYTHON (default python3), SDARTS_DATA (default .devdata), SMOKE_SPACES
# (gpu_smoke.py --spaces), STEP_COMPILE=1 (also time torch.compile), MIXED_OP_COMPILE (cases
# timed under torch.compile in mixed_op.py; default "sum").
set -u
cd "$(dirname "$0")/.."

OUT=${OUT:-./gpu_out}
BUDGET_S=${BUDGET_S:-345}
RESERVE_S=${RESERVE_S:-15}   # kept for the metrics copy and the final summary
MIN_STAGE_S=${MIN_STAGE_S:-20}
E2E_EPOCHS=${E2E_EPOCHS:-50}
E2E_LEVELS=${E2E_LEVELS:-single}
DRY_RUN=${DRY_RUN:-0}
PY=${PYTHON:-python3}
export SDARTS_DATA=${SDARTS_DATA:-.devdata}
export PYTHONUNBUFFERED=1
export TRITON_INTERPRET=0   # compiled Triton on the GPU (tests/conftest.py sets the same where torch sees one)
export MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}

# ---------------------------------------------------------------------------- the stages
# name:limit, in priority order.  e2e stages take what is left ("rest").
STEP_NB201_VARIANTS="plain engine cuda-graph plain-cuda-graph cuda-graph-edge triton-edge all-fast channels-last amp
 fused-opt recompute recompute-1x1 engine-triton engine-reference"
STEP_DARTS_VARIANTS="plain engine cuda-graph plain-cuda-graph cuda-graph-edge all-fast channels-last amp recompute-sep-cl
 engine-triton"
STEP_IMAGENET_VARIANTS="plain engine cuda-graph all-fast"
GO_NO_GO_TESTS="tests/test_gpu_paths.py::test_go_no_go_captured_search_step_equals_eager
 tests/test_graphed_step.py::test_cuda_graph_on_a_real_gpu_matches_eager"
PLAN=(versions:10 build:100 smoke:60 go-no-go:40 step-nb201:75 gpu-tests:45 step-darts:60 step-imagenet:40
    mixed-op:60 conv-merge:30)
if ((E2E_EPOCHS > 0)); then
    for level in $E2E_LEVELS; do PLAN+=("e2e-$level:rest"); done
fi

# wanted NAME: whether STAGES (default: every stage) names this stage (e2e-LEVEL answers to "e2e").
wanted() {
    local name=$1
    [[ $name == build ]] && return 0
    [[ $name == e2e-* ]] && name=e2e
    [[ " ${STAGES:-all} " == *" all "* || " ${STAGES:-all} " == *" $name "* ]]
}

# The plan: which stages fit in BUDGET_S - RESERVE_S in order, with their limits.  A "rest"
# stage (e2e) gets, when it starts, the time left shared among the rest stages still to come
# (600 s at most); it is planned if that share would be at least MIN_STAGE_S.
declare -A LIMIT PLANNED
REST_STAGES=0
plan() {
    local cap=$((BUDGET_S - RESERVE_S)) sum=0 entry name limit rest=0
    for entry in "${PLAN[@]}"; do
        name=${entry%%:*}
        wanted "$name" && [[ ${entry#*:} == rest ]] && rest=$((rest + 1))
    done
    REST_STAGES=$rest
    for entry in "${PLAN[@]}"; do
        name=${entry%%:*} limit=${entry#*:}
        wanted "$name" || continue
        LIMIT[$name]=$limit
        if [[ $limit == rest ]]; then
            (((cap - sum) / rest >= MIN_STAGE_S)) && PLANNED[$name]="rest: $(((cap - sum) / rest < 600 ? (cap - sum) / rest : 600))"
        elif ((sum + limit <= cap)); then
            sum=$((sum + limit))
            PLANNED[$name]=$sum
        fi
    done
}

print_plan() {
    echo "## gpu_check plan: BUDGET_S=$BUDGET_S, RESERVE_S=$RESERVE_S: $((BUDGET_S - RESERVE_S)) s for stages (STAGES=${STAGES:-all})"
    echo
    echo "| # | stage | limit s | cumulative s | plan |"
    echo "| --- | --- | --- | --- | --- |"
    local i=0 entry name
    for entry in "${PLAN[@]}"; do
        name=${entry%%:*}
        [[ -n ${LIMIT[$name]+x} ]] || continue
        i=$((i + 1))
        if [[ ${PLANNED[$name]:-} == rest:* ]]; then
            echo "| $i | $name | rest (~${PLANNED[$name]#rest: } s, 600 at most) | - | planned |"
        elif [[ -n ${PLANNED[$name]+x} ]]; then
            echo "| $i | $name | ${LIMIT[$name]} | ${PLANNED[$name]} | planned |"
        else
            echo "| $i | $name | ${LIMIT[$name]} | - | if time is left |"
        fi
    done
}

plan
if [[ $DRY_RUN == 1 ]]; then
    print_plan
    exit 0
fi

mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
STAGES_DIR=$(mktemp -d)  # per-stage logs stay out of $OUT (only 8 files come back)
START=$(date +%s)
SUMMARY=()
NOT_OK=()  # stages that failed or timed out: their last lines go into the final block
: >"$LOG"
print_plan | tee -a "$LOG"

# stage NAME COMMAND...: run COMMAND under timeout (its limit, shrunk to the time left), log it,
# record its outcome.  The stage's output is kept in $STAGES_DIR/NAME.log for the final block.
stage() {
    local name=$1
    shift
    local limit=${LIMIT[$name]} left=$((BUDGET_S - RESERVE_S - ($(date +%s) - START)))
    if [[ $limit == rest ]]; then
        limit=$((left / (REST_STAGES > 0 ? REST_STAGES : 1)))
        ((limit > 600)) && limit=600
        REST_STAGES=$((REST_STAGES - 1))
    fi
    if ((left < MIN_STAGE_S || limit < MIN_STAGE_S)); then
        SUMMARY+=("| $name | $limit | skipped: budget spent | 0 |")
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "=== [$name] limit ${limit}s: $*" | tee -a "$LOG"
    local t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG" "$STAGES_DIR/$name.log"
    local rc=${PIPESTATUS[0]} status
    case $rc in
        0) status=ok ;;
        124 | 137) status="TIMEOUT after ${limit}s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    SUMMARY+=("| $name | $limit | $status | $(($(date +%s) - t0)) |")
    ((rc == 0)) || NOT_OK+=("$name")
    return "$rc"
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

# What the bench scripts see (they run from bench/, so from anywhere but the repository root).
extension_ok() { (cd / && "$PY" -c "import sys, sdarts._C as c; sys.exit(0 if c.with_cuda() else 1)") 2>/dev/null; }
installed() { (cd / && "$PY" -c "import sdarts, sdarts.kernels") 2>/dev/null; }

build() {
    if extension_ok && installed; then
        echo "build: sdarts._C (with CUDA kernels) and sdarts.kernels already import: skipped"
        return 0
    fi
    if compgen -G "sdarts/_C*.so" >/dev/null && PYTHONPATH=$PWD "$PY" -c "import sys, sdarts._C as c; sys.exit(0 if c.with_cuda() else 1)" 2>/dev/null; then
        echo "build: a built sdarts._C is in the tree (carried): installing the package around it, no rebuild"
        SDARTS_NO_EXTENSION=1 "$PY" -m pip install --no-build-isolation --no-deps -e . && return 0
    fi
    "$PY" -m pip install --no-build-isolation --no-deps -e .
}

fallback_install() {
    echo "build failed: installing sdarts without its C++/CUDA extension (reference and Triton backends only)"
    SDARTS_NO_EXTENSION=1 "$PY" -m pip install --no-build-isolation --no-deps -e .
}

gpu_tests() {
    local files=() f
    for f in tests/test_gpu_paths.py tests/test_kernels_triton.py tests/test_kernels_cpp.py tests/test_mixed_sum.py \
        tests/test_mixed_op.py tests/test_normalized_edge.py tests/test_graphed_step.py; do
        [[ -f $f ]] && files+=("$f")
    done
    local opts=(-v -p no:cacheprovider)
    "$PY" -c "import xdist" 2>/dev/null && opts+=(-n 8)  # Triton compiles dominate: spread them
    "$PY" -c "import pytest_timeout" 2>/dev/null && opts+=(--timeout 120)  # one hang costs one test
    for f in $GO_NO_GO_TESTS; do opts+=(--deselect "$f"); done  # already run, alone, by go-no-go
    "$PY" -m pytest "${opts[@]}" "${files[@]}" -k "cuda or gpu or triton"
}

export PY GO_NO_GO_TESTS
export -f versions build extension_ok installed fallback_install gpu_tests  # so that `timeout` can run them through bash

# ---------------------------------------------------------------------------- run
wanted versions && stage versions bash -c versions
if [[ ${BUILD:-1} == 1 ]]; then
    stage build bash -c build
else
    SUMMARY+=("| build | ${LIMIT[build]} | skipped: BUILD=0 | 0 |")
fi
EXTENSION="sdarts._C with CUDA kernels"
if ! extension_ok; then
    if installed; then
        EXTENSION="no sdarts._C with CUDA kernels (the build failed or was skipped): Triton and reference backends"
    else
        LIMIT[fallback-install]=60
        stage fallback-install bash -c fallback_install
        if installed; then
            EXTENSION="no sdarts._C: installed without the extension (Triton and reference backends)"
        else
            export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
            EXTENSION="no sdarts._C, no install: PYTHONPATH=\$PWD (reference backend only)"
        fi
    fi
fi
echo "extension: $EXTENSION" | tee -a "$LOG"
# The built extension (debug sections stripped), for a later fresh machine: carried back as
# sdarts/<this name>, it spares that machine the build.  16 MiB at most come back per file.
if [[ ${COPY_EXTENSION:-1} == 1 ]] && extension_ok; then
    for so in sdarts/_C*.so; do
        [[ -f $so ]] || continue
        strip --strip-debug -o "$OUT/$(basename "$so")" "$so" 2>/dev/null || cp "$so" "$OUT/"
        if (($(stat -c %s "$OUT/$(basename "$so")") > 16 * 1024 * 1024)); then
            rm -f "$OUT/$(basename "$so")"
        else
            echo "copied $so (debug sections stripped) to \$OUT" | tee -a "$LOG"
        fi
    done
fi

smoke_spaces=()
[[ -n ${SMOKE_SPACES:-} ]] && read -r -a smoke_spaces <<<"--spaces $SMOKE_SPACES"
wanted smoke && stage smoke "$PY" bench/gpu_smoke.py --device cuda "${smoke_spaces[@]}"
# shellcheck disable=SC2086  # word splitting of the test ids is wanted
wanted go-no-go && stage go-no-go "$PY" -m pytest -v -x -p no:cacheprovider $GO_NO_GO_TESTS
compile=()
[[ ${STEP_COMPILE:-0} == 1 ]] && compile=(plain-compile compile)
# shellcheck disable=SC2086
wanted step-nb201 && stage step-nb201 "$PY" bench/search_step.py --space nb201 --device cuda \
    --json "$OUT/search_step_nb201.json" --steps 10 --warmup 3 --variant-timeout 45 --variants $STEP_NB201_VARIANTS "${compile[@]}"
wanted gpu-tests && stage gpu-tests bash -c gpu_tests
# shellcheck disable=SC2086
wanted step-darts && stage step-darts "$PY" bench/search_step.py --space darts --device cuda \
    --json "$OUT/search_step_darts.json" --steps 5 --warmup 2 --variant-timeout 45 --variants $STEP_DARTS_VARIANTS "${compile[@]}"
# shellcheck disable=SC2086
wanted step-imagenet && stage step-imagenet "$PY" bench/search_step.py --space darts-imagenet --device cuda \
    --json "$OUT/search_step_darts_imagenet.json" --steps 3 --warmup 2 --variant-timeout 40 --variants $STEP_IMAGENET_VARIANTS
read -r -a compile_cases <<<"${MIXED_OP_COMPILE:-sum}"
wanted mixed-op && stage mixed-op "$PY" bench/mixed_op.py --device cuda --json "$OUT/mixed_op.json" \
    --compile-cases "${compile_cases[@]}"
# Its table is in the log (no JSON: only 8 files come back from $OUT).
wanted conv-merge && stage conv-merge "$PY" bench/conv_merge.py --device cuda
if ((E2E_EPOCHS > 0)); then
    for level in $E2E_LEVELS; do
        wanted "e2e-$level" || continue
        activation=sigmoid  # Single-DARTS; the DARTS baseline (bilevel) is softmax as in the paper's table
        [[ $level == bilevel* ]] && activation=softmax
        runs=$(mktemp -d)
        # Strict: a failed capture stops the run at once with the reason (eager steps would take minutes per epoch).
        # The evaluation batch does not change the search (no autograd, running statistics): 2048 cuts its
        # launches 4x against the CLI's 512 (49 -> 13 batches of the 25,000 other-half images per epoch).
        stage "e2e-$level" "$PY" bench/search_e2e.py --device cuda --cuda-graph-strict --epochs "$E2E_EPOCHS" \
            --eval-batch-size "${E2E_EVAL_BATCH:-2048}" \
            --optimizer-level "$level" --activation "$activation" --json "$OUT/search_e2e_$level.json" \
            --data-dir "$SDARTS_DATA/cifar10-jpeg" --nb201-table "$SDARTS_DATA/nb201/nb201_200ep_accuracies.csv" --out-root "$runs"
        # Also after a timeout: the per-epoch records, and the run itself (a later session can
        # `sdarts-search --resume` it) if it fits in one returned file.
        metrics=$(find "$runs" -name metrics.jsonl | head -n 1)
        if [[ -n $metrics ]]; then
            cp "$metrics" "$OUT/search_e2e_${level}_metrics.jsonl"
            run_dir=$(dirname "$metrics")
            tar -czf "$STAGES_DIR/run.tgz" -C "$(dirname "$run_dir")" --exclude='*.lock' --exclude='*.tmp' "$(basename "$run_dir")" 2>/dev/null &&
                (($(stat -c %s "$STAGES_DIR/run.tgz") <= 16 * 1024 * 1024)) && mv "$STAGES_DIR/run.tgz" "$OUT/search_e2e_${level}_run.tgz"
        fi
    done
fi

# ---------------------------------------------------------------------------- the final block
# Least important first: only its end may survive the 12,000 characters that come back.
tables() { [[ -f $STAGES_DIR/$1.log ]] && grep -E '^(## |\| |FAILED variants|smoke: )' "$STAGES_DIR/$1.log"; }

pytest_summary() {  # NAME: counts, the failing tests, pytest's last line (present unless it was killed)
    local log=$STAGES_DIR/$1.log
    [[ -f $log ]] || return 0
    local passed failed skipped
    passed=$(grep -cE '(PASSED|XPASS)( |$)' "$log")
    failed=$(grep -cE '(FAILED|ERROR)( |$)' "$log")
    skipped=$(grep -cE 'SKIPPED( |$)' "$log")
    echo "## $1: $passed passed, $failed failed or errors, $skipped skipped (from the -v lines)"
    grep -E '(FAILED|ERROR)( |$)' "$log" | grep -vE '^(=|_)' | sed -E 's/^\[gw[0-9]+\] \[ *[0-9]+%\] //' | head -n 15
    grep -E '^=+ .*(passed|failed|error).* =+$' "$log" | tail -n 1
}

e2e_summary() {  # LEVEL: the last epochs of the (possibly cut) run
    local metrics=$OUT/search_e2e_$1_metrics.jsonl
    [[ -f $metrics ]] || return 0
    "$PY" - "$metrics" "$E2E_EPOCHS" "$1" <<'EOF' 2>/dev/null
import json, statistics, sys
path, epochs, level = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]
if not rows:
    sys.exit()
med = statistics.median(r["time_s"] for r in rows)
print(f"## e2e {level}: {len(rows)} of {epochs} epochs, median {med:.1f} s/epoch (projected {epochs} epochs: "
      f"{med * epochs / 60:.1f} min), elapsed {rows[-1]['elapsed_s'] / 60:.1f} min\n")
print("| epoch | s | train acc | valid acc | cifar10 test | cifar100 test | graph | cell |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows[-8:]:
    b = r.get("benchmark") or {}
    f = lambda v: "-" if v is None else f"{v:.2f}"
    print(f"| {r['epoch']} | {r['time_s']:.1f} | {r['train_acc']:.2f} | {r['valid_acc']:.2f} | {f(b.get('cifar10_test'))} | "
          f"{f(b.get('cifar100_test'))} | {str(r.get('cuda_graph', '-'))[:40]} | {r['genotype'].replace('|', '/')} |")
EOF
}

BLOCK=$STAGES_DIR/final_block.txt
{
    echo
    echo "################ results ################"
    for name in conv-merge mixed-op step-imagenet step-darts; do tables "$name"; done
    pytest_summary gpu-tests
    if [[ -f $STAGES_DIR/smoke.log ]]; then
        echo "## smoke: the items not ok"
        grep -E '^\| ' "$STAGES_DIR/smoke.log" | grep -vE '^\| [^|]+ \| [^|]+ \| ok \|' | grep -vE '^\| (space|---) '
        grep -E '^smoke: ' "$STAGES_DIR/smoke.log"
    fi
    if [[ -f $STAGES_DIR/go-no-go.log ]]; then
        echo "## go-no-go (a captured search step equals the eager one)"
        grep -E '(PASSED|FAILED|ERROR|SKIPPED)( |$)' "$STAGES_DIR/go-no-go.log" | grep -vE '^(=|_)' | head -n 12
        grep -E '^E  ' "$STAGES_DIR/go-no-go.log" | head -n 6
        grep -E '^=+ .*(passed|failed|error).* =+$' "$STAGES_DIR/go-no-go.log" | tail -n 1
    fi
    tables step-nb201
    for level in $E2E_LEVELS; do
        tables "e2e-$level"
        e2e_summary "$level"
        [[ -f $STAGES_DIR/e2e-$level.log ]] && grep -E 'sdarts-search: error' "$STAGES_DIR/e2e-$level.log" | tail -n 2
    done
    for name in "${NOT_OK[@]}"; do
        echo "## $name did not pass: its last lines"
        grep -vE '^\s*$' "$STAGES_DIR/$name.log" 2>/dev/null | tail -n 4 | cut -c1-300
    done
    echo
    echo "## gpu_check stages ($(($(date +%s) - START)) s of a ${BUDGET_S} s budget; extension: $EXTENSION; log: $LOG)"
    echo
    echo "| stage | limit s | status | seconds |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${SUMMARY[@]}"
} >"$BLOCK"
cat "$BLOCK" >>"$LOG"
# At most ~10,000 characters, whole lines, the end kept (the stage summary is last).
tail -c 10000 "$BLOCK" | sed 1d
rm -rf "$STAGES_DIR"
