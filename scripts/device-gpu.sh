#!/usr/bin/env bash
# One call on a lent NVIDIA GPU machine (the `device` tool) that times hvq against PyTorch CUDA on
# the same GPU: through CUDA and wgpu (the NVIDIA Vulkan driver) with a binary built with
# `--features cuda` (`--cuda`), or through wgpu alone with the plain release build (the default:
# a CUDA build takes 27-45 minutes from cold here, the plain one ~10-20).
#
# Prepare on the project VM (nothing can be downloaded on the device):
#   wgpu only: cargo build --release -p core     # ~10 min incremental, ~20 after vendor/ changes
#              strip -o /tmp/hvq "$CARGO_TARGET_DIR/release/hvq" && xz -T2 -c /tmp/hvq > .device/wgpu/hvq.xz
#              git rev-parse HEAD > .device/wgpu/COMMIT
#   --cuda:    bash scripts/cuda-bundle.sh   # .device/cli/hvq.xz: CUDA and wgpu in one binary
#              (LLVM from scripts/cuda-llvm.sh, cut to the NVPTX and X86 back ends), and the golden
#              test binary for scripts/cuda-checks.sh; 55 min cold on 2026-12-06 (27 min the
#              binary, 24 the golden test's, which compiles the stack again with the tests'
#              features)
#   .gl/*.deb: apt-get download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2
#              (amd64; the device image has no Vulkan loader)
#   .device/wheels/: pip download --no-deps --only-binary=:all: --platform manylinux2014_x86_64
#              --python-version 3.12 safetensors     (the device's python3 has torch and numpy)
# Then one call, timeout_s 600, carry [".device/wgpu", ".device/wheels", ".gl"]:
#   bash scripts/device-gpu.sh
# or carry [".device/cli", ".device/wheels", ".gl"] (64 MiB a call, the ~22 MiB tree included):
#   bash scripts/device-gpu.sh --cuda
# It runs, each step bounded so that the whole fits the call, the tables the issue asks for first:
#   0. (--cuda) hvq selfcheck --device cuda: the shipped model on CUDA against the CPU, and its
#      inspections replayed from a recorded pass (a CUDA graph) against the same run directly;
#   1. the first batch (8) with both sides' kernel profiles: hvq (CUDA with --cuda, and wgpu)
#      against PyTorch; hvq's products on the default `auto` routine (each kind timed on cubek's
#      `SimpleUnit` and hvq's tiled kernel in five variants: the table of those timings in
#      summary.md, the choices kept in product-choices.json, which the later runs take instead
#      of timing), and inference's attention on `auto` likewise (hvq's split kernel against
#      burn's flash kernel per kind of attention: its table in summary.md, kept in the same file);
#   2. the other batches (1, 32) without profiles (every `hvq bench` also times its end-to-end
#      runs replayed from a recorded pass: the "replayed" rows of each summary);
#   3. the A/B runs at the first batch (hvq alone, no PyTorch, into b8-ab/): the fixed routine
#      `simple` (cubek's, every product) beside auto, the attention A/B (--attention-ab), both on
#      CUDA with --cuda (else on wgpu), and the kernels compiled to SPIR-V by CubeCL beside the
#      default's WGSL (--compiler-ab, wgpu);
# prints the summaries, and packs everything as $OUT/device-gpu.tgz (the tool returns few files).
# Options: --cuda, --batches "8 1 32" (the first gets the profiles and the A/B), --routines
#          "simple", --no-ab, --budget SECONDS (default 540: the call's 600 less unpacking and
#          packing).
set -uo pipefail
cd "$(dirname "$0")/.."

BATCHES="8 1 32"
ROUTINES="simple"
BUDGET=540
CUDA=0
AB=1
while [ $# -gt 0 ]; do
  case "$1" in
    --cuda) CUDA=1; shift ;;
    --batches) BATCHES=${2:?--batches needs a list}; shift 2 ;;
    --routines) ROUTINES=${2:?--routines needs a list}; shift 2 ;;
    --no-ab) AB=0; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "device-gpu: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
log() { printf '[device-gpu %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
RUN=/tmp/device-gpu
rm -rf "$RUN" && mkdir -p "$RUN"

if [ "$CUDA" = 1 ]; then
  BUNDLE=.device/cli
  # cubecl's CUDA math kernels link libdevice from the toolkit.
  export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
  CUDA_ARGS=()
else
  BUNDLE=.device/wgpu
  CUDA_ARGS=(--no-cuda)
fi
[ -f "$BUNDLE/hvq.xz" ] || { echo "device-gpu: $BUNDLE/hvq.xz is missing (see --help)" >&2; exit 2; }

# The Vulkan loader and the PyTorch side's one missing package.
for deb in .gl/*.deb; do dpkg -x "$deb" /; done
ldconfig
python3 -c 'import safetensors, numpy' 2>/dev/null \
  || python3 -m pip install --no-index --break-system-packages -q .device/wheels/*.whl
xz -dc "$BUNDLE/hvq.xz" > /tmp/hvq && chmod +x /tmp/hvq
cp "$BUNDLE/COMMIT" "$RUN/" 2>/dev/null || true
# auto's choices (kind by kind, with every candidate's time) come back with the results.
export HVQ_PRODUCT_CHOICES="$RUN/product-choices.json"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$RUN/gpu.txt"

STATUS=0
if [ "$CUDA" = 1 ]; then
  log "hvq selfcheck --device cuda (CUDA_PATH=$CUDA_PATH)"
  timeout --kill-after=10 120 /tmp/hvq selfcheck --device cuda > "$RUN/selfcheck-cuda.log" 2>&1 \
    || STATUS=1
  tail -n 3 "$RUN/selfcheck-cuda.log"
fi

# One gpu-bench.sh call into $RUN/NAME, bounded by what is left of the budget.
bench() { # name args...
  local name=$1 remaining
  shift
  remaining=$(left)
  if [ "$remaining" -lt 60 ]; then
    log "$name skipped: ${remaining}s left of the budget"
    STATUS=1
    return
  fi
  local args=(--hvq /tmp/hvq "${CUDA_ARGS[@]}" --configs official --runs 5 --out "$RUN/$name"
              --time-limit "$remaining" "$@")
  log "gpu-bench.sh ${args[*]}"
  HVQ_PYTHON=python3 timeout --kill-after=10 "$remaining" bash scripts/gpu-bench.sh "${args[@]}" \
    > "$RUN/$name.log" 2>&1 || STATUS=1
}

FIRST=${BATCHES%% *}
for batch in $BATCHES; do
  if [ "$batch" = "$FIRST" ]; then
    bench "b$batch" --batch "$batch"
  else
    bench "b$batch" --batch "$batch" --no-kernels
  fi
  sed -n '/## config/,/^host/p' "$RUN/b$batch/summary.md" 2>/dev/null | head -30
done
sed -n '/kernels of one/,/longest kernels/p' "$RUN/b$FIRST/summary.md" 2>/dev/null
# CubeCL's copies that make a tensor contiguous: on CUDA, burn's padded rows (docs/gpu.md).
sed -n '/layout copies/,/^$/p' "$RUN/b$FIRST/summary.md" 2>/dev/null
# What `auto` measured: each kind of product on SimpleUnit and on the tiled kernel's five variants.
sed -n '/products timed by/,$p' "$RUN/b$FIRST/summary.md" 2>/dev/null | head -20

# The A/B runs last: hvq alone beside its own default run (their tables need no PyTorch).
if [ "$AB" = 1 ]; then
  bench "b$FIRST-ab" --batch "$FIRST" --no-torch --no-kernels --matmul-routines "$ROUTINES" \
    --attention-ab --compiler-ab
  for table in compiler matmul attention; do
    summary="$RUN/b$FIRST-ab/$table/summary.txt"
    [ -f "$summary" ] && { echo "-- $table"; cat "$summary"; }
  done
fi
tar czf "${OUT:-/tmp}/device-gpu.tgz" -C /tmp device-gpu
log "done in $(( $(date +%s) - START ))s; results in ${OUT:-/tmp}/device-gpu.tgz"
exit "$STATUS"
