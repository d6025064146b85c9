#!/usr/bin/env bash
# Every kernel hvq launches, compiled for an NVIDIA GPU by burn's CUDA compiler and assembled by
# NVIDIA's ptxas, on a machine without a GPU (CI, the developers' VMs): the check that hvq's own
# kernels, written and tested on wgpu, also build for CUDA, before a lent GPU's minutes are spent
# finding out. Also says, per kernel, what ptxas allotted: registers, spills, shared memory.
#
# How: `hvq ptx-check` (a CUDA build) runs the pipeline on wgpu (lavapipe here) with an observer
# in the wgpu compiler that hands each kernel to cubecl-llvm's NVPTX compiler, with the options
# burn's CUDA runtime gives an H100/H200 (compute capability 9.0, CUDA 13.0 driver), and writes
# the PTX (core/src/device/ptx_check.rs). Several runs cover the kernels one run does not launch:
# the official and default models (inference of the shipped model on its samples, every bench
# stage, a training step on cached features and one through the backbone), half precision (f16;
# bf16 has no type on lavapipe), and the alternatives hvq can be switched to (burn's flash
# attention, the composed training attention). The f32 runs time every kind of product on each
# routine, as `auto` does on a GPU (`--every-product-routine`; HVQ_PRODUCT_CHOICES=off, so nothing
# kept from an earlier run is taken instead), so every tiled variant is compiled. Then
# `ptxas -arch sm_90a -v` assembles each PTX file.
#
# Not covered: kernels whose definition depends on the device (burn's products pick tensor-core
# routines on CUDA, which wgpu has none of; burn sizes its element-wise cubes by the adapter, 8
# threads on lavapipe, so their occupancy in the table is not CUDA's), and whether the PTX computes the right numbers (that is
# `hvq selfcheck --device cuda` and the golden tests on the GPU: scripts/device-gpu.sh).
#
# Usage: bash scripts/ptx-check.sh [--hvq BIN] [--out DIR] [--quick]
#   BIN: a CUDA build of hvq (default $CARGO_TARGET_DIR/release/hvq, as .ci/run builds it);
#   DIR: the PTX, the lists, ptxas's logs and report.json (default: a temporary folder);
#   --quick: the official model at f32 only.
# Needs: a wgpu adapter (lavapipe: scripts/setup.sh), ptxas and libdevice (scripts/cuda-tools.sh,
# run here if missing). Exit status 1 when a kernel is refused by either compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
hvq="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}/release/hvq"
out=""
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hvq) hvq=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "ptx-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$hvq" ] || { echo "ptx-check: $hvq is not an executable (build: cargo build --release -p core --features cuda)" >&2; exit 2; }
if [ -z "$out" ]; then
  out=$(mktemp -d)
fi
rm -rf "$out"
mkdir -p "$out"

tools=$(bash scripts/cuda-tools.sh | tail -1)
export CUDA_PATH="$tools"
export HVQ_PRODUCT_CHOICES=off
arch=sm_90a

# run NAME [VAR=VALUE ...] -- [hvq options ...]
run() {
  local name=$1; shift
  local vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  local t0; t0=$(date +%s)
  if env "${vars[@]}" "$hvq" ptx-check --out "$out/ptx" --run "$name" "$@" >"$out/run-$name.log" 2>&1; then
    echo "run   $name: $(grep '^ptx-check:' "$out/run-$name.log" | cut -c12- | cut -d';' -f1) ($(( $(date +%s) - t0 )) s)"
  else
    echo "FAIL  run $name (log $out/run-$name.log):"
    { grep -E '^(REFUSED|Error)' "$out/run-$name.log" || tail -5 "$out/run-$name.log"; } | head -20 | sed 's/^/      | /'
    runs_failed=$((runs_failed + 1))
  fi
}
runs_failed=0
run official-f32 -- --config official --every-product-routine
if [ "$quick" = 0 ]; then
  run default-f32 -- --config default --every-product-routine
  # bf16 is not covered: lavapipe has no bf16 type (wgpu refuses bf16 products there).
  run official-f16 -- --precision f16 --config official
  run official-flash HVQ_GPU_ATTENTION=flash HVQ_TRAIN_ATTENTION=composed -- --config official
fi

mkdir -p "$out/ptxas"
for ptx in "$out"/ptx/*.ptx; do
  [ -e "$ptx" ] || continue
  key=$(basename "$ptx" .ptx)
  if "$tools/bin/ptxas" -arch="$arch" -v -o /dev/null "$ptx" >"$out/ptxas/$key.log" 2>&1; then
    echo ok >"$out/ptxas/$key.status"
  else
    echo failed >"$out/ptxas/$key.status"
  fi
done
status=0
python3 scripts/ptx_report.py "$out" "$arch" || status=$?
if [ "$runs_failed" -gt 0 ]; then
  echo "ptx-check: $runs_failed run(s) failed (above)"
  status=1
fi
exit $status
