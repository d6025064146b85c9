#!/usr/bin/env bash
# Everything worth doing on a machine with an NVIDIA GPU, in one go (a lent GPU is short on time):
#   1. scripts/gpu-bench.sh: hvq bench on the GPU (wgpu through the NVIDIA Vulkan driver; CUDA too
#      unless --no-cuda) and the PyTorch reference on the same GPU, with the summary table.
#   2. Parity on real hardware: the shipped model scores the sample images with --device wgpu and
#      --device cpu; the class chosen must agree, and score and map within the bound the web test
#      uses between two of our backends (1e-3 of the CPU's score and of its largest map value).
#   2b. predict throughput (images/s) of the shipped model at batch 16 on cuda, wgpu and the CPU.
#   3. Training on the GPU: `hvq train --device wgpu` on DATA for EPOCHS epochs, then `hvq eval` on
#      the GPU; the loss log and metrics are kept (compare them with the same run on the CPU).
# All output lands in OUT (default bench-results/gpu-checks-<date>); exit status 1 if a step failed.
#
# Usage: bash scripts/gpu-checks.sh [--hvq BINARY] [--data FORMAT:PATH] [--epochs N] [--out DIR]
#                                   [-- options for gpu-bench.sh]
#   --hvq BINARY    a prebuilt hvq (default: build with cargo, as gpu-bench.sh does)
#   --data F:PATH   training data for step 3 (default: none, step 3 is skipped)
#   --epochs N      epochs for step 3 (default 20)
# Environment: VK_DRIVER_FILES, if unset, is pointed at the NVIDIA Vulkan driver file when one is
# found (scripts/nvidia-icd.sh), so wgpu cannot fall back to a CPU Vulkan driver.
set -uo pipefail
cd "$(dirname "$0")/.."

HVQ=""
DATA=""
EPOCHS=20
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hvq) HVQ=${2:?--hvq needs a path}; shift 2 ;;
    --data) DATA=${2:?--data needs FORMAT:PATH}; shift 2 ;;
    --epochs) EPOCHS=${2:?--epochs needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    --) shift; break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu-checks: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-bench-results/gpu-checks-$(date -u +%Y-%m-%d_%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log() { printf '[gpu-checks %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
FAILED=()

# shellcheck source=nvidia-icd.sh
. scripts/nvidia-icd.sh
ICD=$(nvidia_icd)
[ -n "$ICD" ] && export VK_DRIVER_FILES=$ICD VK_ICD_FILENAMES=$ICD
log "Vulkan driver file: ${VK_DRIVER_FILES:-none found (wgpu takes what the loader finds)}"

# ---- 1. the benchmark ---------------------------------------------------------------------------
BENCH_ARGS=(--out "$OUT/bench")
[ -n "$HVQ" ] && BENCH_ARGS+=(--hvq "$HVQ")
log "gpu-bench.sh ${BENCH_ARGS[*]} $*"
bash scripts/gpu-bench.sh "${BENCH_ARGS[@]}" "$@" || FAILED+=("gpu-bench (see $OUT/bench)")
if [ -z "$HVQ" ]; then
  HVQ=${CARGO_TARGET_DIR:-target}/release/hvq
fi
[ -x "$HVQ" ] || { echo "gpu-checks: no hvq binary at $HVQ" >&2; exit 1; }

# ---- 2. parity, GPU against CPU -------------------------------------------------------------------
log "parity: predict samples/ on wgpu and on cpu"
for dev in wgpu cpu; do
  "$HVQ" predict samples --device "$dev" --out "$OUT/predict-$dev" > "$OUT/predict-$dev.log" 2>&1 \
    || FAILED+=("predict --device $dev")
done
python3 - "$OUT" <<'EOF' | tee "$OUT/parity.txt" || FAILED+=("parity wgpu vs cpu")
import json, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
gpu = {Path(r["image"]).name: r for r in json.loads((out / "predict-wgpu/results.json").read_text())}
cpu = {Path(r["image"]).name: r for r in json.loads((out / "predict-cpu/results.json").read_text())}
assert gpu.keys() == cpu.keys() and cpu, "the two runs scored different images"
bad = 0
for name in sorted(cpu):
    g, c = gpu[name], cpu[name]
    stem = Path(name).stem
    mg = np.load(out / f"predict-wgpu/{stem}_map.npy")
    mc = np.load(out / f"predict-cpu/{stem}_map.npy")
    dmap = float(np.abs(mg - mc).max())
    dscore = abs(g["score"] - c["score"])
    ok = (g["class"] == c["class"] and dscore <= 1e-3 * abs(c["score"])
          and dmap <= 1e-3 * float(np.abs(mc).max()))
    bad += not ok
    print(f"{name:32} class {g['class']}/{c['class']}  score {g['score']:.5f} vs {c['score']:.5f}"
          f" (|d| {dscore:.2e})  map max |d| {dmap:.2e} (max |map| {np.abs(mc).max():.2f})  {'ok' if ok else 'FAIL'}")
sys.exit(1 if bad else 0)
EOF

# ---- 2b. predict throughput: the shipped model on 64 copies of the samples, batch 16 ----------------
# (decoding and writing overlap the device since 2026-12-02; the images/s line of each run)
log "predict throughput, 64 images, batch 16"
mkdir -p "$OUT/throughput-in"
for i in $(seq 1 16); do
  for f in samples/*.png; do cp "$f" "$OUT/throughput-in/$(basename "$f" .png)-$i.png"; done
done
for dev in cuda wgpu cpu; do
  if "$HVQ" predict "$OUT/throughput-in" --device "$dev" --batch 16 --out "$OUT/throughput-$dev" \
      > "$OUT/throughput-$dev.log" 2>&1; then
    echo "$dev: $(grep -o 'wrote .*' "$OUT/throughput-$dev.log")" | tee -a "$OUT/throughput.txt"
  elif [ "$dev" = cuda ]; then
    echo "cuda: not run ($(tail -n 1 "$OUT/throughput-$dev.log"))" | tee -a "$OUT/throughput.txt"
  else
    FAILED+=("predict throughput --device $dev")
  fi
done
rm -rf "$OUT/throughput-in" "$OUT"/throughput-{cuda,wgpu,cpu}

# ---- 3. training on the GPU --------------------------------------------------------------------------
if [ -n "$DATA" ]; then
  log "train --device wgpu on $DATA, $EPOCHS epochs"
  # The shipped model's architecture and objective (weights/elpv-lite0/MODEL_CARD.md).
  if "$HVQ" train --data "$DATA" --out "$OUT/train" --preset paper --epochs "$EPOCHS" --lr 5e-4 \
      --embed-dim 64 --ffn-dim 256 --codes 64 --device wgpu > "$OUT/train.log" 2>&1; then
    tail -n 3 "$OUT/train.log"
    "$HVQ" eval --weights "$OUT/train" --data "$DATA" --device wgpu --json "$OUT/train/eval.json" \
      > "$OUT/eval.log" 2>&1 && cat "$OUT/eval.log" || FAILED+=("eval on wgpu")
  else
    tail -n 20 "$OUT/train.log"
    FAILED+=("train on wgpu")
  fi
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  log "incomplete: ${FAILED[*]}"
  exit 1
fi
log "done: everything is in $OUT"
