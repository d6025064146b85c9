#!/usr/bin/env bash
# One call on a lent NVIDIA GPU machine (the `device` tool) that times hvq through wgpu (the
# NVIDIA Vulkan driver) against PyTorch CUDA, for a session without a CUDA build of hvq (which
# takes ~45 minutes to build here; see scripts/cuda-bundle.sh for the CUDA route).
#
# Prepare on the project VM (nothing can be downloaded on the device):
#   cargo build --release -p core                        # ~10 min incremental, ~20 after vendor/ changes
#   strip -o /tmp/hvq "$CARGO_TARGET_DIR/release/hvq" && xz -T2 -c /tmp/hvq > .device/wgpu/hvq.xz
#   .gl/*.deb: apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2
#              (amd64; the device image has no Vulkan loader)
#   .device/wheels/: pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64
#              --python-version 3.12 safetensors     (the device's python3 has torch and numpy)
# Then one call, carry [".device/wgpu", ".device/wheels", ".gl"], timeout_s 600:
#   bash scripts/device-wgpu.sh
# It runs, each bounded so that the whole fits the call:
#   1. batch 8 with both sides' kernel profiles (hvq's products on the default `auto` routine:
#      each kind timed on cubek's `SimpleUnit` and hvq's tiled kernel in five variants, the
#      table of those timings in summary.md, the choices kept in product-choices.json, which the
#      later runs take instead of timing), the fixed routine `simple` (cubek's, every product)
#      beside it, the kernels compiled to SPIR-V by CubeCL beside the default's WGSL
#      (--compiler-ab) and
#      the attention A/B (--attention-ab);
#   2. batch 1 and batch 32 without profiles;
# prints the summaries, and packs everything as $OUT/device-wgpu.tgz (the tool returns few files).
# Options: --batches "8 1 32" (the first gets the profiles and the A/B), --routines "simple",
#          --budget SECONDS (default 540: the device call's 600 less unpacking and packing).
set -uo pipefail
cd "$(dirname "$0")/.."

BATCHES="8 1 32"
ROUTINES="simple"
BUDGET=540
while [ $# -gt 0 ]; do
  case "$1" in
    --batches) BATCHES=${2:?--batches needs a list}; shift 2 ;;
    --routines) ROUTINES=${2:?--routines needs a list}; shift 2 ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "device-wgpu: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
log() { printf '[device-wgpu %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
RUN=/tmp/device-wgpu
rm -rf "$RUN" && mkdir -p "$RUN"

# The Vulkan loader and the PyTorch side's one missing package.
for deb in .gl/*.deb; do dpkg -x "$deb" /; done
ldconfig
python3 -c 'import safetensors, numpy' 2>/dev/null \
  || python3 -m pip install --no-index --break-system-packages -q .device/wheels/*.whl
xz -dc .device/wgpu/hvq.xz > /tmp/hvq && chmod +x /tmp/hvq
cp .device/wgpu/COMMIT "$RUN/" 2>/dev/null || true
# auto's choices (kind by kind, with every candidate's time) come back with the results.
export HVQ_PRODUCT_CHOICES="$RUN/product-choices.json"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$RUN/gpu.txt"

first=1
STATUS=0
for batch in $BATCHES; do
  remaining=$(left)
  if [ "$remaining" -lt 60 ]; then
    log "batch $batch skipped: ${remaining}s left of the budget"
    continue
  fi
  args=(--hvq /tmp/hvq --no-cuda --configs official --batch "$batch" --runs 5 --out "$RUN/b$batch"
        --time-limit "$remaining")
  if [ "$first" = 1 ]; then
    args+=(--matmul-routines "$ROUTINES" --attention-ab --compiler-ab)
  else
    args+=(--no-kernels)
  fi
  first=0
  log "gpu-bench.sh ${args[*]}"
  HVQ_PYTHON=python3 timeout --kill-after=10 "$remaining" bash scripts/gpu-bench.sh "${args[@]}" \
    > "$RUN/b$batch.log" 2>&1 || STATUS=1
  sed -n '/## config/,/^host/p' "$RUN/b$batch/summary.md" 2>/dev/null | head -30
  for table in compiler matmul attention; do
    [ -f "$RUN/b$batch/$table/summary.txt" ] && { echo "-- $table"; cat "$RUN/b$batch/$table/summary.txt"; }
  done
done
sed -n '/kernels of one/,/longest kernels/p' "$RUN/b${BATCHES%% *}/summary.md" 2>/dev/null
# What `auto` measured: each kind of product on SimpleUnit and on the tiled kernel's five variants.
sed -n '/products timed by/,$p' "$RUN/b${BATCHES%% *}/summary.md" 2>/dev/null | head -20
tar czf "${OUT:-/tmp}/device-wgpu.tgz" -C /tmp device-wgpu
log "done in $(( $(date +%s) - START ))s; results in ${OUT:-/tmp}/device-wgpu.tgz"
exit "$STATUS"
