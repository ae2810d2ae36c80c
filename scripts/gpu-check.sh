#!/usr/bin/env bash
# The CUDA backend on a real GPU (issue 7). On a machine with an NVIDIA GPU
# and its driver, and only this repository:
#   1. builds (release) the CUDA backend and its tests;
#   2. runs the whole reference suite on CUDA with the GPU lowering, failing
#      instead of skipping (ALEXC_REQUIRE_GPU=1); ALEXC_CUDA_ALL_SETS=1 adds
#      the suite's five CPU option sets (several more minutes of NVRTC);
#   3. trains alexnet-small with the state resident on the device, step by
#      step and pipelined (next batch through pinned memory and a copy
#      stream), against each other (bit for bit) and the interpreter;
#   4. compiles every AlexNet kernel with NVRTC and checks ptxas spills;
#   5. benchmarks alexnet.ron training at batch 128, fused vs unfused,
#      sequential and pipelined steps, and lists the slowest kernels;
# then prints one summary table. Meant to finish in under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup.sh
source scripts/setup.sh
export CARGO_TERM_COLOR=never
export ALEXC_REQUIRE_GPU=1 ALEXC_REQUIRE_NVRTC=1
STEPS="${ALEXC_BENCH_STEPS:-10}"
LOG="target/gpu-check"
mkdir -p "$LOG"
start=$(date +%s)
declare -a rows=()

step() { # name, command...
    local name="$1"; shift
    local t0=$(date +%s)
    echo "== $name"
    if "$@" >"$LOG/$name.log" 2>&1; then status=PASS; else status=FAIL; fi
    local dt=$(( $(date +%s) - t0 ))
    tail -n 25 "$LOG/$name.log"
    rows+=("| $name | $status | ${dt}s | $LOG/$name.log |")
    [ "$status" = PASS ]
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU (nvidia-smi -L fails); nothing to check here." >&2
    exit 1
fi
nvidia-smi -L

step build cargo test --release -p alexc-cuda --no-run \
    && step build-bench cargo build --release -p alexc-cuda --example cuda_bench
ok=$?
if [ $ok -eq 0 ]; then
    step suite-gpu-lowering cargo test --release -p alexc-cuda --test suite_cuda -- \
        --nocapture every_case_matches_the_reference_on_cuda_with_the_gpu_lowering
    if [ "${ALEXC_CUDA_ALL_SETS:-0}" = 1 ]; then
        step suite-cpu-option-sets cargo test --release -p alexc-cuda --test suite_cuda -- \
            --nocapture every_case_matches_the_reference_on_cuda_with_the_cpu_option_sets
    fi
    step resident-training cargo test --release -p alexc-cuda --test runtime_cuda -- --nocapture \
        pipelined_training_on_the_gpu
    step nvrtc-ptxas cargo test --release -p alexc-cuda --test nvrtc -- --nocapture
    step bench cargo run --release -p alexc-cuda --example cuda_bench -- models/alexnet.ron 128 "$STEPS"
fi

echo
echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1), $(( $(date +%s) - start ))s)"
echo "| step | result | time | log |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ -f "$LOG/bench.log" ]; then
    echo
    grep '^|' "$LOG/bench.log" || true
fi
! printf '%s\n' "${rows[@]}" | grep -q FAIL
