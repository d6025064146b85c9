#!/usr/bin/env bash
# Every kernel hvq launches, compiled for NVIDIA GPUs by burn's CUDA compiler and assembled by
# NVIDIA's ptxas, on a machine without a GPU (CI, the developers' VMs): the check that hvq's own
# kernels, written and tested on wgpu, also build for CUDA, before a lent GPU's minutes are spent
# finding out. Also says, per kernel, what ptxas allotted: registers, spills, shared memory.
#
# How: `hvq ptx-check` (a CUDA build) runs the pipeline on wgpu (lavapipe here) with an observer in
# the wgpu compiler that hands each kernel to cubecl-llvm's NVPTX compiler, with the options burn's
# CUDA runtime gives an NVIDIA GPU on a CUDA 13.0 driver, once per architecture: 9.0 (H100, H200:
# the project's), 8.9 (RTX 40, L4), 8.6 (RTX 30, A10), 8.0 (A100), 7.5 (T4, RTX 20: the oldest CUDA
# 13 runs), and writes the PTX (core/src/device/ptx_check.rs). Several runs cover the kernels one
# run does not launch: the official and default models (inference of the shipped model on its
# samples, every bench stage, a training step on cached features and one through the backbone) and
# half precision (f16; bf16 has no type on lavapipe). The f32 runs time every kind of product on each
# routine, as `auto` does on a GPU (`--every-product-routine`; HVQ_PRODUCT_CHOICES=off, so nothing
# kept from an earlier run is taken instead), so every tiled variant is compiled, and launch both
# kernels of each `auto` attention once (hvq's split kernel and burn's flash kernel at inference,
# the fused and the composed form in training, with dropout), so the alternatives hvq can be
# switched to are compiled too: a fourth run with them forced (`HVQ_GPU_ATTENTION=flash
# HVQ_TRAIN_ATTENTION=composed`) added none of the 360 kernels (2026-12-07) and was dropped. Then
# `ptxas -v` assembles each PTX file for its architecture, and for sm_90a `scripts/sass_mix.py` reads the
# machine code of hvq's own kernels (nvdisasm): what each main loop spends its instructions on.
#
# Not covered: kernels whose definition depends on the device (burn's products pick tensor-core
# routines on CUDA, which wgpu has none of; burn sizes its element-wise cubes by the adapter, 8
# threads on lavapipe, so their occupancy in the table is not CUDA's), and whether the PTX computes
# the right numbers (that is `hvq selfcheck --device cuda` and the golden tests on the GPU:
# scripts/device-gpu.sh).
#
# Usage: bash scripts/ptx-check.sh [--hvq BIN] [--out DIR] [--architectures LIST] [--quick]
#   BIN: a CUDA build of hvq (default $CARGO_TARGET_DIR/debug/hvq, as .ci/run and scripts/test.sh
#     build it; a release build works the same and runs faster);
#   DIR: the PTX, the lists, ptxas's logs and report.json (default: a temporary folder);
#   LIST: compute capabilities, the first one's table printed in full (default 90,89,86,80,75:
#     8 min 7 s on the project's 2-core VM with the runs one after another; 90,75, as CI runs it:
#     6 min 2 s with a release binary, 6 min 45 s with the debug one, the runs two at a time,
#     2026-12-06; with the three runs of 2026-12-07 and the debug binary 3 min 24 s, where the
#     four took 5 min 18 s on the same VM);
#   --quick: the official model at f32 only.
# Needs: a wgpu adapter (lavapipe: scripts/setup.sh), ptxas and libdevice (scripts/cuda-tools.sh,
# run here if missing). Exit status 1 when a kernel is refused by either compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
hvq="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}/debug/hvq"
out=""
quick=0
architectures=90,89,86,80,75
while [ $# -gt 0 ]; do
  case "$1" in
    --hvq) hvq=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --architectures) architectures=$2; shift 2 ;;
    *) echo "ptx-check: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$hvq" ] || { echo "ptx-check: $hvq is not an executable (build: cargo build --workspace --features core/cuda)" >&2; exit 2; }
if [ -z "$out" ]; then
  out=$(mktemp -d)
elif [ -n "$(ls -A "$out" 2>/dev/null)" ] && [ ! -d "$out/ptx" ]; then
  echo "ptx-check: $out is not empty and not an earlier ptx-check's folder; name another" >&2
  exit 2
fi
# An earlier run's files only (the folder is this script's or new).
rm -rf "$out/ptx" "$out/ptxas" "$out"/run-*.log "$out"/run-*.result "$out/report.json" "$out/sass.md" "$out/sass.json"
mkdir -p "$out"

tools=$(bash scripts/cuda-tools.sh | tail -1)
export CUDA_PATH="$tools"
export HVQ_PRODUCT_CHOICES=off
# The runs' coverage rests on `auto` launching every candidate (the products' routines, both
# attention kernels, both training attention forms): a routine forced in the caller's environment
# would leave the others uncompiled.
export HVQ_GPU_MATMUL=auto HVQ_GPU_ATTENTION=auto HVQ_TRAIN_ATTENTION=auto

# run NAME [VAR=VALUE ...] -- [hvq options ...]: in the background, its verdict line into
# $out/run-NAME.result. A run keeps about one core and a quarter busy (lavapipe, and the NVPTX
# compiler on the wgpu thread) and ~2.1 GB of memory (the official run's peak), so as many run at
# once as there are cores: on the project's 2-core VM, 2026-12-06, `--architectures 90,75` took
# 6 min 2 s so, 11 min 20 s with the runs one after another (same PTX, same tables).
run() {
  local name=$1; shift
  local vars=()
  while [ "$1" != "--" ]; do vars+=("$1"); shift; done
  shift
  while [ "$(jobs -rp | wc -l)" -ge "$(nproc)" ]; do wait -n || true; done
  names+=("$name")
  (
    t0=$(date +%s)
    if env "${vars[@]}" "$hvq" ptx-check --out "$out/ptx" --run "$name" \
      --compute-capabilities "$architectures" "$@" >"$out/run-$name.log" 2>&1; then
      echo "run   $name: $(grep '^ptx-check:' "$out/run-$name.log" | cut -c12- | cut -d';' -f1) ($(( $(date +%s) - t0 )) s)"
    else
      echo "FAIL  run $name (log $out/run-$name.log):"
      { grep -E '^(REFUSED|Error)' "$out/run-$name.log" || tail -5 "$out/run-$name.log"; } | head -20 | sed 's/^/      | /'
    fi >"$out/run-$name.result"
  ) &
}
names=()
runs_failed=0
run official-f32 -- --config official --every-product-routine
if [ "$quick" = 0 ]; then
  run default-f32 -- --config default --every-product-routine
  # bf16 is not covered: lavapipe has no bf16 type (wgpu refuses bf16 products there).
  run official-f16 -- --precision f16 --config official
fi
wait
for name in "${names[@]}"; do
  cat "$out/run-$name.result"
  grep -q '^run ' "$out/run-$name.result" || runs_failed=$((runs_failed + 1))
done

# Each file for the architecture its `.target` names (as the driver loads it for that part), as
# many at once as there are cores.
mkdir -p "$out/ptxas"
assemble() {
  local ptx=$1 file arch
  file=$(basename "$ptx" .ptx)
  arch=$(sed -n 's/^\.target \([a-z0-9_]*\).*/\1/p' "$ptx" | head -1)
  if "$PTXAS" -arch="${arch:-missing-target}" -v -o "$OUT/ptxas/$file.cubin" "$ptx" \
    >"$OUT/ptxas/$file.log" 2>&1; then
    echo ok >"$OUT/ptxas/$file.status"
  else
    echo failed >"$OUT/ptxas/$file.status"
  fi
}
export -f assemble
export PTXAS="$tools/bin/ptxas" OUT="$out"
find "$out/ptx" -name '*.ptx' -print0 | xargs -0 -r -n 8 -P "$(nproc)" bash -c 'for f; do assemble "$f"; done' _
status=0
python3 scripts/ptx_report.py "$out" || status=$?
# hvq's own kernels' machine code on sm_90a: what their main loops spend instructions on.
if [[ ",$architectures," == *",90,"* ]]; then
  echo
  python3 scripts/sass_mix.py "$out" --json "$out/sass.json" | tee "$out/sass.md" \
    || status=1
fi
if [ "$runs_failed" -gt 0 ]; then
  echo "ptx-check: $runs_failed run(s) failed (above)"
  status=1
fi
exit $status
