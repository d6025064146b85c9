#!/usr/bin/env bash
# hvq against PyTorch on the CPU, with AVX-512 and capped at AVX2, in one sitting (issue 22):
# hvq native, PyTorch native, hvq capped, PyTorch capped, then a table of medians and ratios.
#
#   cargo build --release -p core
#   scripts/cpu-isa-bench.sh [--python PY] [--runs N] [--config official|default] [--out DIR]
#
# The caps: hvq `HVQ_CPU_ISA=avx2` (gemm, burn-flex's SIMD and hvq's kernels: vendor/README.md);
# PyTorch `ATEN_CPU_CAPABILITY=avx2` (ATen's kernels), `MKL_ENABLE_INSTRUCTIONS=AVX2` (MKL's
# sgemm), `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN's convolutions and matmuls). Every JSON records what
# it ran on (`cpu_isa`). PyTorch comes from a venv with torch from PyPI (README "Speed").
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
hvq="${HVQ_BIN:-$CARGO_TARGET_DIR/release/hvq}"
python="${PYTHON:-python3}"
runs=6
config=official
out="bench-results/isa-$(date -u +%F)"
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 1 ;;
  esac
done
[ -x "$hvq" ] || { echo "$hvq missing: cargo build --release -p core" >&2; exit 1; }
threads=$(nproc)
mkdir -p "$out"
for isa in native avx2; do
  if [ "$isa" = avx2 ]; then
    caps=(HVQ_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)
  else
    caps=()
  fi
  echo "== $isa: hvq"
  env "${caps[@]}" "$hvq" bench --device cpu --config "$config" --batch 8 --runs "$runs" \
    --json "$out/hvq-$config-b8-$isa.json"
  echo "== $isa: PyTorch"
  env "${caps[@]}" "$python" scripts/pytorch/bench_torch.py --device cpu --config "$config" --batch 8 \
    --threads "$threads" --train-batch 8 --runs "$runs" --json "$out/torch-$config-b8-$isa.json"
done
python3 - "$out" "$config" <<'PY'
import json, sys
out, config = sys.argv[1:]
load = lambda who, isa: json.load(open(f"{out}/{who}-{config}-b8-{isa}.json"))
rows = [("end to end, batch 8", lambda r: r["end_to_end"]["median_ms"])]
rows += [(s, (lambda s: lambda r: next(x["median_ms"] for x in r["stages"] if x["stage"] == s))(s))
         for s in ["preprocess", "backbone", "encoder", "vq", "decoder", "map + ot", "upsample + score"]]
rows += [("training step, cached features", lambda r: r["train_step_cached"]["median_ms"])]
runs = {isa: (load("hvq", isa), load("torch", isa)) for isa in ("native", "avx2")}
h, t = runs["native"]
print(f"\n{h['machine']}; hvq {h['cpu_isa']['in_use']}/{h['cpu_isa']['gemm']} vs PyTorch {t['cpu_isa']['aten_capability']} "
      f"(native) and hvq {runs['avx2'][0]['cpu_isa']['gemm']} vs PyTorch {runs['avx2'][1]['cpu_isa']['aten_capability']} (capped); medians, ms\n")
print("| stage | hvq AVX-512 | PyTorch AVX-512 | ratio | hvq AVX2 | PyTorch AVX2 | ratio |")
print("|---|---|---|---|---|---|---|")
for name, get in rows:
    cells = []
    for isa in ("native", "avx2"):
        hv, tv = (get(r) for r in runs[isa])
        cells += [f"{hv:.1f}", f"{tv:.1f}", f"{hv / tv:.2f}"]
    print(f"| {name} | " + " | ".join(cells) + " |")
PY
