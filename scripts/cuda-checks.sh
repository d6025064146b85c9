#!/usr/bin/env bash
# CUDA for real, on a machine with an NVIDIA GPU, from binaries built elsewhere (the GPU machine
# lent to this project cannot build: it has no cargo and no network). Prints one table.
#
#   golden   the golden parity tests on CUDA: the `golden` test binary built with
#            `--features cuda` (scripts/cuda-bundle.sh makes it) against $HVQ_GOLDEN_DIR, one
#            row per set whose file is there
#   selfcheck  `hvq selfcheck --device cuda`: shipped model on the shipped samples, CUDA vs CPU;
#            again at --precision tf32, whose deviation must be larger (the switch works)
#   train    a short `hvq train --device cuda` (shipped architecture and preset), stopped after
#            2 of 3 epochs; `--resume` of that CUDA checkpoint on the CPU; `hvq eval` of the
#            result on CUDA and on the CPU (same metrics expected); and the other way round, a
#            CPU checkpoint resumed on CUDA
#   auto     `hvq selfcheck` with no --device picks CUDA
#   oom      `hvq train --device cuda` at an absurd batch: the out-of-memory advice, no panic text
#
# Usage: bash scripts/cuda-checks.sh [--hvq BIN] [--golden-test BIN] [--data FORMAT:PATH] [--out DIR]
#   --hvq BIN          the hvq binary built with --features cuda (or BIN.xz, unpacked first)
#   --golden-test BIN  the golden test binary built with --features cuda (or BIN.xz)
#   --data F:PATH      training data for `train` (default: a generated folder tree)
# Steps whose binary is not given are reported as "not run". CUDA_PATH defaults to /usr/local/cuda
# (libdevice). Exit status 1 when a step that ran failed.
set -uo pipefail
cd "$(dirname "$0")/.."

HVQ=""
GOLDEN_TEST=""
DATA=""
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hvq) HVQ=${2:?}; shift 2 ;;
    --golden-test) GOLDEN_TEST=${2:?}; shift 2 ;;
    --data) DATA=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "cuda-checks: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-bench-results/cuda-checks-$(date -u +%Y-%m-%d_%H%M%SZ)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export CUDA_PATH=${CUDA_PATH:-/usr/local/cuda}
log() { printf '[cuda-checks %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
ROWS=()
FAILED=0
row() { ROWS+=("$(printf '%-34s %-7s %s' "$1" "$2" "$3")"); [ "$2" = FAIL ] && FAILED=1; return 0; }

# A .xz binary is unpacked into a temporary folder (not OUT: the results travel back as files).
BIN_DIR=$(mktemp -d)
trap 'rm -rf "$BIN_DIR"' EXIT
unpack() {
  local bin=$1
  [ -z "$bin" ] && return 0
  if [[ "$bin" == *.xz ]]; then
    local plain="$BIN_DIR/$(basename "${bin%.xz}")"
    xz -dc "$bin" >"$plain" && chmod +x "$plain" && echo "$plain"
  else
    echo "$bin"
  fi
}
HVQ=$(unpack "$HVQ")
GOLDEN_TEST=$(unpack "$GOLDEN_TEST")

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  echo "CUDA_PATH=$CUDA_PATH (libdevice: $(ls "$CUDA_PATH"/nvvm/libdevice/libdevice.10.bc 2>/dev/null || echo missing))"
  [ -n "$HVQ" ] && "$HVQ" --version
} | tee "$OUT/environment.txt"

# ---- golden parity on CUDA ----------------------------------------------------------------------
# One row per golden set; a set whose file did not travel (the sets are split over two calls to
# stay under the 64 MiB a call carries) is "not run".
GOLDEN_DIR=${HVQ_GOLDEN_DIR:-../shared/golden}
for set in hvq_small hvq_small_trainstep backbone_b4; do
  if [ -z "$GOLDEN_TEST" ]; then
    row "golden $set (CUDA)" "not run" "no --golden-test"
  elif [ ! -f "$GOLDEN_DIR/$set.safetensors" ]; then
    row "golden $set (CUDA)" "not run" "no $GOLDEN_DIR/$set.safetensors here"
  else
    log "golden parity on CUDA: $set"
    if HVQ_GOLDEN_DIR=$GOLDEN_DIR "$GOLDEN_TEST" --include-ignored --exact "golden_${set}_cuda" >"$OUT/golden-$set.log" 2>&1 \
        && grep -q '^test result: ok. 1 passed' "$OUT/golden-$set.log"; then
      row "golden $set (CUDA)" ok "$(grep -E '^test result' "$OUT/golden-$set.log" | cut -c1-60)"
    else
      row "golden $set (CUDA)" FAIL "see golden-$set.log: $(grep -E 'panicked|differ|mismatch' "$OUT/golden-$set.log" | head -n2 | tr '\n' ' ' | cut -c1-160)"
    fi
  fi
done

if [ -n "$HVQ" ]; then
  # ---- selfcheck ----------------------------------------------------------------------------------
  log "selfcheck on CUDA"
  if "$HVQ" selfcheck --device cuda --json "$OUT/selfcheck-cuda.json" >"$OUT/selfcheck-cuda.log" 2>&1; then
    row "selfcheck --device cuda" ok "$(tail -n1 "$OUT/selfcheck-cuda.log")"
  else
    row "selfcheck --device cuda" FAIL "$(tail -n2 "$OUT/selfcheck-cuda.log" | tr '\n' ' ')"
  fi
  cat "$OUT/selfcheck-cuda.log"
  # --precision tf32 must move CUDA's results off its f32 ones (TF32 operands keep 10 of f32's 23
  # mantissa bits, so the deviation from the CPU grows by orders of magnitude), and f32 must not
  # use TF32: the two selfchecks' worst deviations are compared. 4x is a floor far below the
  # expected gap, far above run-to-run noise (the same kernels give the same values).
  log "selfcheck on CUDA at --precision tf32"
  "$HVQ" selfcheck --device cuda --precision tf32 --json "$OUT/selfcheck-cuda-tf32.json" \
    >"$OUT/selfcheck-cuda-tf32.log" 2>&1
  worst() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["worst_relative_diff"])' "$1" 2>/dev/null; }
  F32_DIFF=$(worst "$OUT/selfcheck-cuda.json")
  TF32_DIFF=$(worst "$OUT/selfcheck-cuda-tf32.json")
  if [ -n "$F32_DIFF" ] && [ -n "$TF32_DIFF" ] \
      && python3 -c 'import sys; f, t = map(float, sys.argv[1:]); sys.exit(0 if t > 4 * f else 1)' "$F32_DIFF" "$TF32_DIFF"; then
    row "--precision tf32 reaches the kernels" ok "worst rel Δ vs cpu: f32 $F32_DIFF, tf32 $TF32_DIFF"
  else
    row "--precision tf32 reaches the kernels" FAIL "worst rel Δ vs cpu: f32 ${F32_DIFF:-?}, tf32 ${TF32_DIFF:-?} (see selfcheck-cuda-tf32.log)"
  fi
  if "$HVQ" selfcheck >"$OUT/selfcheck-auto.log" 2>&1 && grep -q '^device: cuda' "$OUT/selfcheck-auto.log"; then
    row "auto picks CUDA" ok "$(grep '^device:' "$OUT/selfcheck-auto.log")"
  else
    row "auto picks CUDA" FAIL "$(grep '^device:' "$OUT/selfcheck-auto.log")"
  fi

  # ---- training on CUDA, resumed on the CPU ---------------------------------------------------------
  if [ -z "$DATA" ]; then
    # Two classes of generated parts (normal stripes; anomalies with a bright square), folder layout.
    python3 - "$OUT/data" <<'EOF'
import sys, zlib, struct
from pathlib import Path
root = Path(sys.argv[1])
def png(path, rows):
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    h, w = len(rows), len(rows[0]) // 3
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def part(cls, seed, defect=False):
    rows = []
    for y in range(64):
        r = []
        for x in range(64):
            v = (170 if ((x + 3 * cls) // 4) % 2 == 0 else 80) + ((x * 73) ^ (y * 151) ^ (seed * 2654435761)) % 23
            if defect and 20 <= x < 32 and 20 <= y < 32: v = 255
            r += [v % 256, max(0, v - 20 * cls) % 256, (v // 2 + 40) % 256]
        rows.append(r)
    return rows
for c, name in enumerate(["alpha", "beta"]):
    for i in range(24): png(root / name / "train/good" / f"{i:03}.png", part(c, i))
    for i in range(6):
        png(root / name / "test/good" / f"{i:03}.png", part(c, 100 + i))
        png(root / name / "test/scratch" / f"{i:03}.png", part(c, 200 + i, True))
EOF
    DATA="mvtec:$OUT/data"
  fi
  SHIPPED=(--preset paper --lr 5e-4 --embed-dim 64 --ffn-dim 256 --codes 64 --batch 16 --checkpoint-every 1)
  log "train on CUDA (2 of 3 epochs), resume on the CPU"
  if "$HVQ" train --device cuda --data "$DATA" --out "$OUT/train" --epochs 3 --stop-after 2 "${SHIPPED[@]}" \
      >"$OUT/train-cuda.log" 2>&1; then
    row "train --device cuda (2 epochs)" ok "$(grep -c . "$OUT/train/train-log.jsonl") epochs logged, $(grep -E '^device:' "$OUT/train-cuda.log")"
    if "$HVQ" train --device cpu --data "$DATA" --out "$OUT/train" --epochs 3 --resume "${SHIPPED[@]}" \
        >"$OUT/train-resume-cpu.log" 2>&1 && grep -q "resuming after epoch 2" "$OUT/train-resume-cpu.log"; then
      row "resume the CUDA checkpoint on cpu" ok "$(tail -n1 "$OUT/train/train-log.jsonl" | cut -c1-80)"
      for dev in cuda cpu; do
        if "$HVQ" eval --device "$dev" --weights "$OUT/train" --data "$DATA" --json "$OUT/eval-$dev.json" \
            >"$OUT/eval-$dev.log" 2>&1; then
          row "eval --device $dev" ok "$(grep -E '^mean' "$OUT/eval-$dev.log" | head -n1)"
        else
          row "eval --device $dev" FAIL "$(tail -n2 "$OUT/eval-$dev.log" | tr '\n' ' ')"
        fi
      done
    else
      row "resume the CUDA checkpoint on cpu" FAIL "$(tail -n2 "$OUT/train-resume-cpu.log" | tr '\n' ' ')"
    fi
  else
    row "train --device cuda (2 epochs)" FAIL "$(tail -n3 "$OUT/train-cuda.log" | tr '\n' ' ')"
  fi

  log "train on the CPU (2 of 3 epochs), resume on CUDA"
  if "$HVQ" train --device cpu --data "$DATA" --out "$OUT/train-cpu" --epochs 3 --stop-after 2 "${SHIPPED[@]}" \
      >"$OUT/train-cpu.log" 2>&1 \
    && "$HVQ" train --device cuda --data "$DATA" --out "$OUT/train-cpu" --epochs 3 --resume "${SHIPPED[@]}" \
      >"$OUT/train-resume-cuda.log" 2>&1 && grep -q "resuming after epoch 2" "$OUT/train-resume-cuda.log"; then
    row "resume a CPU checkpoint on cuda" ok "$(tail -n1 "$OUT/train-cpu/train-log.jsonl" | cut -c1-80)"
  else
    row "resume a CPU checkpoint on cuda" FAIL "$(tail -n2 "$OUT/train-resume-cuda.log" 2>/dev/null | tr '\n' ' ')"
  fi

  # ---- out of memory ------------------------------------------------------------------------------
  log "out of GPU memory: an absurd batch"
  # 20 000 images: 12 GB of input on the host, far beyond the GPU's memory once through the stem.
  timeout 180 "$HVQ" bench --device cuda --config official --batch 20000 --runs 1 >"$OUT/oom.log" 2>&1
  if grep -q "smaller --batch" "$OUT/oom.log" && ! grep -qE "panicked|RUST_BACKTRACE" "$OUT/oom.log"; then
    row "out of memory: advice, no panic" ok "$(grep -m1 'smaller --batch' "$OUT/oom.log" | cut -c1-90)"
  else
    row "out of memory: advice, no panic" FAIL "$(tail -n3 "$OUT/oom.log" | tr '\n' ' ' | cut -c1-200)"
  fi
else
  row "hvq on CUDA" "not run" "no --hvq"
fi

{
  echo
  echo "CUDA checks, $(date -u +%Y-%m-%d), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1)"
  printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.txt"
exit "$FAILED"
