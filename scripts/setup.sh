#!/usr/bin/env bash
# Idempotent set-up of everything the build needs beyond a Rust toolchain.
# Sourced by scripts/test.sh and .ci/run (and safe to run by hand).
#
# LLVM backend (crates/alexc-llvm: inkwell, llvm-sys 191): LLVM 19's
# development files (llvm-config-19, headers, libLLVM-19.so; linked
# dynamically, so no static-library dependencies). Debian bookworm ships them.
if ! command -v llvm-config-19 >/dev/null 2>&1; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    $sudo apt-get install -y llvm-19-dev zlib1g-dev libzstd-dev libxml2-dev
fi
LLVM_SYS_191_PREFIX="${LLVM_SYS_191_PREFIX:-$(llvm-config-19 --prefix)}"
export LLVM_SYS_191_PREFIX

# Fashion-MNIST (real training data for `alexc train`, its CI smoke run and
# the real-data test of crates/alexc-train, which skip without it): Debian's
# dataset-fashion-mnist puts the gzipped IDX files in
# /usr/share/datasets/fashion-mnist. Optional, so a failure only warns.
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    { $sudo apt-get update && $sudo apt-get install -y dataset-fashion-mnist; } ||
        echo "warning: could not install dataset-fashion-mnist; real-data training tests will be skipped" >&2
fi

# CUDA backend (crates/alexc-cuda): NVRTC (libnvrtc.so.12) to compile the
# generated CUDA C to PTX, and ptxas to check registers and spills. Neither
# needs a GPU; both come from NVIDIA's PyPI wheels, installed once into a
# project-local directory (no system packages, no root). Tests that need
# them skip with a message when this fails.
ALEXC_CUDA_HOME="${ALEXC_CUDA_HOME:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/target/cuda-home}"
export ALEXC_CUDA_HOME
if [ ! -e "$ALEXC_CUDA_HOME/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ] \
    || [ ! -x "$ALEXC_CUDA_HOME/nvidia/cuda_nvcc/bin/ptxas" ]; then
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$ALEXC_CUDA_HOME" \
            "nvidia-cuda-nvrtc-cu12==12.9.*" "nvidia-cuda-nvcc-cu12==12.9.*" \
            || echo "setup.sh: installing the NVRTC/ptxas wheels failed; CUDA compile tests will be skipped" >&2
    else
        echo "setup.sh: python3 with pip is missing, so NVRTC and ptxas cannot be installed; CUDA compile tests will be skipped" >&2
    fi
fi
if [ -d "$ALEXC_CUDA_HOME/nvidia/cuda_nvrtc/lib" ] \
    && [[ ":${LD_LIBRARY_PATH:-}:" != *":$ALEXC_CUDA_HOME/nvidia/cuda_nvrtc/lib:"* ]]; then
    export LD_LIBRARY_PATH="$ALEXC_CUDA_HOME/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [ -x "$ALEXC_CUDA_HOME/nvidia/cuda_nvcc/bin/ptxas" ]; then
    export ALEXC_PTXAS="$ALEXC_CUDA_HOME/nvidia/cuda_nvcc/bin/ptxas"
fi
