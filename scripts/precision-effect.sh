#!/usr/bin/env bash
# The effect of --precision on results: `hvq eval` of one model on one dataset at each precision,
# on one device, then a table against the f32 run: image AUROC (mean and per class), how far each
# image's score moved (relative to its f32 score), how many images changed side of the model's
# threshold, and the eval's wall time. Reports in OUT (eval-<precision>.json, .log; summary.md).
#
# Usage: bash scripts/precision-effect.sh --data FORMAT:PATH [--hvq BIN] [--device D]
#                                         [--precisions "f32 tf32 bf16 f16"] [--weights DIR] [--out DIR]
#   --data F:PATH     the dataset (e.g. elpv:$HOME/.cache/hvq/elpv/elpv_dataset/data)
#   --hvq BIN         the hvq binary (default: the release build in CARGO_TARGET_DIR or ./target)
#   --device D        cpu, wgpu or cuda (default cpu)
#   --precisions L    default "f32 bf16 f16" (tf32 is f32 except on CUDA); f32 is always run first
#   --weights DIR     a model directory (default: the shipped model)
# Exit status 1 when an eval failed.
set -uo pipefail
cd "$(dirname "$0")/.."

HVQ="${CARGO_TARGET_DIR:-target}/release/hvq"
DATA=""
DEVICE=cpu
PRECISIONS="f32 bf16 f16"
WEIGHTS=()
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --hvq) HVQ=${2:?}; shift 2 ;;
    --data) DATA=${2:?}; shift 2 ;;
    --device) DEVICE=${2:?}; shift 2 ;;
    --precisions) PRECISIONS=${2:?}; shift 2 ;;
    --weights) WEIGHTS=(--weights "${2:?}"); shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "precision-effect: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$DATA" ] || { echo "precision-effect: --data is required (see --help)" >&2; exit 2; }
[ -x "$HVQ" ] || { echo "precision-effect: no hvq binary at $HVQ (--hvq)" >&2; exit 2; }
OUT=${OUT:-bench-results/precision-$DEVICE-$(date -u +%Y-%m-%d)}
mkdir -p "$OUT"
# f32 first: the reference the others are compared with.
LIST="f32 $(printf '%s\n' $PRECISIONS | grep -vx f32 | tr '\n' ' ')"
FAILED=0
for p in $LIST; do
  echo "[precision-effect] hvq eval --device $DEVICE --precision $p"
  start=$(date +%s.%N)
  if "$HVQ" eval --device "$DEVICE" --precision "$p" --data "$DATA" "${WEIGHTS[@]}" \
      --json "$OUT/eval-$p.json" >"$OUT/eval-$p.log" 2>&1; then
    echo "$(date +%s.%N) - $start" | bc >"$OUT/eval-$p.seconds"
  else
    tail -n 3 "$OUT/eval-$p.log" >&2
    FAILED=1
  fi
done
{
  echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) threads); $(date -u +%Y-%m-%d)"
  echo "command: bash scripts/precision-effect.sh --data $DATA --device $DEVICE --precisions \"$PRECISIONS\""
  "$HVQ" --version
} >"$OUT/environment.txt"
# The model's threshold, for the verdicts (the shipped model's unless --weights names another).
CONFIG=${WEIGHTS[1]:-weights/elpv-lite0}/config.json
python3 scripts/precision_effect.py "$OUT" --config "$CONFIG" | tee "$OUT/summary.md"
exit "$FAILED"
