#!/usr/bin/env bash
# Peak memory on many large photos (README "Memory"): the desktop inspector's path (its example,
# 2000 photos by default) and `hvq predict` on growing folders (its peak must not grow with the
# folder; each image writes ~22 MB of outputs, so the folders stay small enough for the disk).
# Usage: scripts/memory.sh [DESKTOP_IMAGES] [PREDICT_COUNTS...]   e.g. scripts/memory.sh 2000 100 400
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
desktop=${1:-2000}
shift || true
counts=("${@:-100 400}")
size=2500x2000
if [ "$desktop" -gt 0 ]; then
  cargo run -q -p desktop --example memory -- "$desktop" "$size" cpu
fi
# The hvq binary the tests built (`cargo test --workspace` builds it with the workspace's features).
hvq="$CARGO_TARGET_DIR/debug/hvq"
[ -x "$hvq" ] || { echo "build it first: cargo test --workspace --no-run" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A generated 2500×2000 RGB photo (smooth gradients and a grid: a cell-like texture, a small PNG).
python3 - "$work/photo.png" "$size" <<'PY'
import struct, sys, zlib
path, (w, h) = sys.argv[1], map(int, sys.argv[2].split("x"))
rows = bytearray()
for y in range(h):
    rows.append(0)  # PNG filter type: none
    for x in range(w):
        rows += bytes((x * 255 // w, y * 255 // h, 200 if (x // 156 + y // 125) % 2 else 90))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b"")
open(path, "wb").write(png)
PY
for n in ${counts[@]}; do
  rm -rf "$work/in" "$work/out"
  mkdir -p "$work/in"
  for i in $(seq -w 1 "$n"); do ln "$work/photo.png" "$work/in/img_$i.png"; done
  start=$(date +%s)
  peak=$( { /usr/bin/time -f '%M' "$hvq" predict --device cpu --out "$work/out" "$work/in" \
      > /dev/null 2> "$work/err"; } 2>&1; tail -n 1 "$work/err")
  echo "hvq predict: $n photos of $size, peak RSS $((peak / 1024)) MiB, $(( $(date +%s) - start )) s"
done
