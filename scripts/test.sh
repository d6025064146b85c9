#!/usr/bin/env bash
# The project's test command: every test of the workspace, on the CPU backend and on wgpu.
# Golden tensors are read from $HVQ_GOLDEN_DIR (default ../shared/golden).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
cargo test --workspace --no-fail-fast "$@"
