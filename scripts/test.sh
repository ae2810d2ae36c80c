#!/usr/bin/env bash
# Runs the whole test suite. Idempotent set-up first: everything the tests
# need is installed here, so this works on a fresh machine with only Rust.
set -euo pipefail
cd "$(dirname "$0")/.."

# (No system packages are needed yet: the front end, the IR and the reference
# interpreter are pure Rust. Backends add their set-up here.)

# insta: with CI=true a missing snapshot fails instead of being written.
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
