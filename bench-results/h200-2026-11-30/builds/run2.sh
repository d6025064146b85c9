#!/usr/bin/env bash
# Device run 2: the same wgpu benchmark with three builds of hvq (default features; +autotune;
# +autotune+fusion), parity of the fused build against the CPU, and GPU training per build.
set -uo pipefail
R=/tmp/r2; mkdir -p $R
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export VK_DRIVER_FILES=/usr/share/vulkan/icd.d/nvidia_icd.json VK_ICD_FILENAMES=/usr/share/vulkan/icd.d/nvidia_icd.json
python3 -c "import tarfile; tarfile.open('.devrun/bins.tar.xz').extractall('/tmp')" && ls -la /tmp/hvq-*
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv
bench() { # build config
  [ -x /tmp/hvq-$1 ] || return
  echo "=== $1 $2"
  t0=$SECONDS
  timeout 100 /tmp/hvq-$1 bench --device wgpu --config $2 --batch 8 --runs 5 --json $R/hvq-$1-$2.json 2>&1 | grep -v XDG_RUNTIME
  echo "wall $((SECONDS - t0)) s"
}
bench base default; bench tune default; bench fuse default
bench fuse official; bench base official
for b in fuse; do
  [ -x /tmp/hvq-$b ] || continue
  echo "=== parity $b"
  for dev in wgpu cpu; do /tmp/hvq-$b predict samples --device $dev --out $R/p-$b-$dev > /dev/null 2>&1; done
  python3 - $R/p-$b-wgpu $R/p-$b-cpu <<'PY'
import json, sys
from pathlib import Path
import numpy as np
g, c = (Path(p) for p in sys.argv[1:3])
G = {Path(r["image"]).name: r for r in json.loads((g / "results.json").read_text())}
C = {Path(r["image"]).name: r for r in json.loads((c / "results.json").read_text())}
for n in sorted(C):
    s = Path(n).stem
    mg, mc = np.load(g / f"{s}_map.npy"), np.load(c / f"{s}_map.npy")
    print(n, G[n]["class_name"], C[n]["class_name"], G[n]["score"], C[n]["score"], abs(G[n]["score"] - C[n]["score"]), float(np.abs(mg - mc).max()), float(np.abs(mc).max()))
PY
done
for b in fuse base; do
  [ -x /tmp/hvq-$b ] || continue
  echo "=== train $b"
  timeout 120 /tmp/hvq-$b train --data folder:.devrun/elpv-mono --out $R/train-$b --preset paper --epochs 20 --lr 5e-4 --embed-dim 64 --ffn-dim 256 --codes 64 --device wgpu > $R/train-$b.log 2>&1
  tail -c 300 $R/train-$b.log; echo
  cp $R/train-$b/train-log.jsonl $R/trainlog-$b.jsonl 2>/dev/null
done
bench tune official
