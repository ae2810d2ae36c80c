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
