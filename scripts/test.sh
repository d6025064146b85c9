#!/usr/bin/env bash
# The project's test command: every test of the workspace, on the CPU backend and on wgpu.
# Golden tensors are read from $HVQ_GOLDEN_DIR (default ../shared/golden).
# Extra arguments go to `cargo test` after `--` (e.g. a name filter, `--nocapture`).
# Then the web page: built into web/dist and tested in headless Chromium against the CLI.
#
# Everything is built with the CUDA backend (`--features core/cuda`, linked against the LLVM that
# scripts/setup.sh installs): the tests then run the binary users build for NVIDIA GPUs (without
# a driver here: CUDA is refused with one clear error, `auto` passes it over, the CUDA-only
# golden tests are marked ignored), and CI builds the whole stack once for the tests, the CUDA
# checks and ptx-check instead of a second time in release. .ci/run's build stage passes the
# same features, so that this script builds nothing again.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
features=(--features core/cuda --locked)
cargo test --workspace "${features[@]}" --lib --bins --tests --no-fail-fast -- "$@" 2>&1 | tee "$log" || status=$?
if [ "$#" -eq 0 ]; then
  # The public API's documentation examples, and the two example programs (README "Layout").
  # Built for the whole workspace, as the tests above: `-p core` alone resolves the dependencies'
  # features without the desktop's and would build burn, CubeCL and wgpu a second time.
  cargo test --workspace "${features[@]}" --doc --no-fail-fast 2>&1 | tee -a "$log" || status=$?
  # The wgpu golden tests (inference, backbone, a training step) once more with every plain f32
  # product on hvq's tiled kernel (HVQ_GPU_MATMUL=tiled, a routine gpu-bench.sh times),
  # inference's attention on hvq's split kernel (HVQ_GPU_ATTENTION=split: unset, `auto` runs
  # burn's flash kernel on lavapipe, a software adapter) and training's as hvq's one operation
  # (HVQ_TRAIN_ATTENTION=fused: unset, `auto` composes it from burn's operations on lavapipe).
  HVQ_GPU_MATMUL=tiled HVQ_GPU_ATTENTION=split HVQ_TRAIN_ATTENTION=fused cargo test --workspace "${features[@]}" --test golden --no-fail-fast -- wgpu 2>&1 | tee -a "$log" || status=$?
  # And with the kernels compiled to SPIR-V by CubeCL itself (HVQ_WGPU_COMPILER=spirv; the runs
  # above use the default, WGSL that naga translates), an alternative gpu-bench.sh times.
  HVQ_WGPU_COMPILER=spirv cargo test --workspace "${features[@]}" --test golden --no-fail-fast -- wgpu 2>&1 | tee -a "$log" || status=$?
  # And with wgpu allocating as CUDA does (HVQ_WGPU_LAYOUT=pitched, vendor/cubecl-wgpu): rows
  # padded to CUDA's alignment, so a kernel that writes or reads a padded tensor in order fails
  # here as it would on an NVIDIA GPU (docs/gpu.md); once with the default routines, once with
  # hvq's own kernels forced as above.
  HVQ_WGPU_LAYOUT=pitched cargo test --workspace "${features[@]}" --test golden --no-fail-fast -- wgpu 2>&1 | tee -a "$log" || status=$?
  HVQ_WGPU_LAYOUT=pitched HVQ_GPU_MATMUL=tiled HVQ_GPU_ATTENTION=split HVQ_TRAIN_ATTENTION=fused cargo test --workspace "${features[@]}" --test golden --no-fail-fast -- wgpu 2>&1 | tee -a "$log" || status=$?
  cargo build -q --workspace "${features[@]}" --examples 2>&1 | tee -a "$log" || status=$?
  examples="$CARGO_TARGET_DIR/debug/examples"
  "$examples/inspect" samples 2>&1 | tee -a "$log" || status=$?
  "$examples/train" 2>&1 | tee -a "$log" || status=$?
  # The fuzzer must keep building, and each target find nothing in a short run (longer runs are
  # made by hand: README).
  for target in image config safetensors pth idx spec; do
    "$examples/fuzz" "$target" 3 2>&1 | tee -a "$log" || status=$?
  done
  # `cargo test --bins` built the CLI the web test compares against.
  { bash web/build.sh && HVQ_BIN="$CARGO_TARGET_DIR/debug/hvq" node tests/web/e2e.mjs; } 2>&1 | tee -a "$log" || status=$?
  # The HTML reports of `hvq eval --report` and `hvq predict --report`, rendered in Chromium.
  HVQ_BIN="$CARGO_TARGET_DIR/debug/hvq" node tests/web/report.mjs 2>&1 | tee -a "$log" || status=$?
fi
# One closing line for the whole run (cargo prints one per test binary).
passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .*; ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "$passed passed, $failed failed"
exit "$status"
