#!/usr/bin/env bash
# Every GPU check in one command, within 8 minutes on one GPU, JSON in bench/results/:
#   1. the CUDA tests (tests/pipelines/test_cuda.py, the kernels compiled, the kernel path's frames);
#   2. each Triton kernel against its reference: time and max error (bench/kernel_bench.py);
#   3. the pipeline benchmark at 512 px with --compile at batch 1, 4 and 16 (bench/pipeline.py),
#      with FLOPs per frame and the fraction of the GPU's peak;
#   4. a loopback round trip through a real server with the model on the GPU, and its cold
#      start twice, the second on torch's compile caches (bench/model_roundtrip.py).
# Each step has its own time limit, so one that hangs cannot eat the others' time; a failed
# step is recorded and the rest still run. bench/results/gpu-summary.json lists every step.
# Without CUDA it runs a reduced form that proves the script works: the kernel tests under
# Triton's interpreter, references only, tiny models at 64 px; each skipped part says so.
# Usage: bash bench/gpu.sh   (PYTHON=... to pick the interpreter; the default is .venv's)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-bench/results}
mkdir -p "$RESULTS"
export HF_HUB_OFFLINE=1

if "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    MODE=gpu
    TAG=$("$PYTHON" -c 'import torch; print(torch.cuda.get_device_name().split()[-1].lower())')
    TAG="gpu-${TAG//[^a-z0-9]/}"
else
    MODE=cpu
    TAG=gpu-script-on-cpu
    echo "no CUDA device: running the reduced CPU form (kernels interpreted, tiny models, no --compile)"
fi
SUMMARY="$RESULTS/$TAG-summary.json"
STEPS=()
START_ALL=$(date +%s)

# step NAME LIMIT_S COMMAND...: run with a time limit, record its exit status and seconds.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit} s): $*"
    local started=$SECONDS
    timeout --kill-after=10 "$limit" "$@"
    local status=$?
    local took=$((SECONDS - started))
    [ "$status" -eq 124 ] && echo "!! $name ran past ${limit} s and was stopped"
    [ "$status" -ne 0 ] && echo "!! $name exited with $status"
    STEPS+=("{\"step\": \"$name\", \"exit_status\": $status, \"seconds\": $took, \"limit_s\": $limit}")
}

if [ "$MODE" = gpu ]; then
    step cuda_tests 70 "$PYTHON" -m pytest -q -x tests/pipelines/test_cuda.py tests/kernels \
        tests/pipelines/test_kernel_paths.py --junitxml="$RESULTS/$TAG-tests.xml"
    step kernels 30 "$PYTHON" bench/kernel_bench.py --device cuda --out "$RESULTS/$TAG-kernels.json"
    step pipeline 200 "$PYTHON" bench/pipeline.py --device cuda --size 512 --compile \
        --sessions 1,4,16 --frames 6 --rounds 4 --skip-memory --max-other-load 1000 \
        --out "$RESULTS/$TAG-pipeline.json"
    step model_roundtrip 170 "$PYTHON" bench/model_roundtrip.py --device cuda --compile \
        --starts 2 --sessions 16 --seconds 5 --out "$RESULTS/$TAG-model_roundtrip.json"
else
    step kernel_tests 300 "$PYTHON" -m pytest -q -x tests/kernels \
        --junitxml="$RESULTS/$TAG-tests.xml"
    echo "-- skipped: tests/pipelines/test_cuda.py needs CUDA"
    step kernels 300 "$PYTHON" bench/kernel_bench.py --device cpu --iterations 3 --batches 1 \
        --out "$RESULTS/$TAG-kernels.json"
    step pipeline 300 "$PYTHON" bench/pipeline.py --quick --sessions 1,4 --skip-memory \
        --out "$RESULTS/$TAG-pipeline.json"
    echo "-- reduced: no --compile on the CPU (minutes to compile), tiny models at 64 px"
    step model_roundtrip 300 "$PYTHON" bench/model_roundtrip.py --quick --sessions 4 \
        --out "$RESULTS/$TAG-model_roundtrip.json"
fi

TOTAL=$(($(date +%s) - START_ALL))
FAILED=0
for entry in "${STEPS[@]}"; do
    case $entry in *'"exit_status": 0,'*) ;; *) FAILED=$((FAILED + 1)) ;; esac
done
{
    printf '{\n  "benchmark": "gpu.sh",\n  "mode": "%s",\n  "total_s": %d,\n' "$MODE" "$TOTAL"
    printf '  "failed_steps": %d,\n  "steps": [\n' "$FAILED"
    for i in "${!STEPS[@]}"; do
        sep=","
        [ "$i" -eq $((${#STEPS[@]} - 1)) ] && sep=""
        printf '    %s%s\n' "${STEPS[$i]}" "$sep"
    done
    printf '  ]\n}\n'
} >"$SUMMARY"
echo "== $TOTAL s in all, $FAILED step(s) failed; wrote $SUMMARY"
[ "$FAILED" -eq 0 ]
