#!/usr/bin/env bash
# Runs the whole test suite. Idempotent set-up first (scripts/setup.sh), so
# this works on a fresh machine with only Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=setup.sh
source scripts/setup.sh

# insta: with CI=true a missing snapshot fails instead of being written.
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
