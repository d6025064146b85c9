#!/usr/bin/env bash
# Builds what scripts/cuda-checks.sh needs on a GPU machine that cannot build (no cargo, no
# network), into folders that travel with the working tree (git-ignored, named in `carry`):
#   .device/cli/hvq.xz              hvq with CUDA and wgpu, stripped, xz-compressed (~40 MB)
#   .device/golden/golden.xz        the golden parity test binary with --features cuda (stripped, xz)
#   .device/golden/small/, trainstep/, b4/
#                                   the golden tensors ($HVQ_GOLDEN_DIR, default ../shared/golden):
#                                   set B (forward), set C (training step), set A (B4), each with
#                                   every manifest
#   .gl/                            the Vulkan/EGL loader packages (wgpu on the NVIDIA driver)
# The lent machine takes at most 64 MiB per call, the tree included (~21 MiB; hvq.xz ~40 with LLVM
# cut to NVPTX and X86 by scripts/cuda-llvm.sh, golden.xz ~31, the golden sets 11, 7 and 20 MB), so
# the checks go in calls of their own, back to back (warm for 30 s between; 2026-12-05 sizes with
# the tree: call 1 60 MiB with .device/wheels, calls 2 and 3 61 and 58, call 4 70, over the limit:
# set A on CUDA waits for a smaller golden binary; hvq selfcheck covers the backbone meanwhile):
#   1. carry [".device/cli", ".gl"]:
#        for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig;
#        bash scripts/cuda-checks.sh --hvq .device/cli/hvq.xz --out /tmp/cli; s=$?;
#        tar czf $OUT/cli.tgz -C /tmp cli; exit $s
#      (results come back as at most 8 files two folders deep: hence one archive per call)
#   2. carry [".device/golden/golden.xz", ".device/golden/small"]:
#        HVQ_GOLDEN_DIR=.device/golden/small bash scripts/cuda-checks.sh \
#          --golden-test .device/golden/golden.xz --out /tmp/golden-small; (tar it into $OUT)
#   3. the same with .device/golden/trainstep (--out /tmp/golden-trainstep)
#   4. the same with .device/golden/b4 (--out /tmp/golden-b4)
# (Each leaves "not run" rows for what it did not carry.)
# The speed table against PyTorch takes the same carry as call 1:
#   xz -dc .device/cli/hvq.xz > /tmp/hvq && chmod +x /tmp/hvq;
#   bash scripts/gpu-bench.sh --hvq /tmp/hvq --runs 5 --precisions "f32 tf32" \
#     --matmul-routines "simple simple-min-tile double double-min-tile gemm tiled" --out /tmp/bench
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
golden_src="${HVQ_GOLDEN_DIR:-../shared/golden}"
mkdir -p .device/cli .device/golden/small .device/golden/trainstep .device/golden/b4

# CUDA and wgpu (with CubeCL's SPIR-V, for gpu-bench.sh --compiler-ab) in one binary; without the
# `remote` default (burn-remote's network stack, which no device check uses) to keep it small.
features=cuda,wgpu,vulkan,parallel,embedded-weights
cargo build --release -p core --no-default-features --features "$features" --locked
strip -o .device/cli/hvq "$CARGO_TARGET_DIR/release/hvq"
xz -T0 -9e -f .device/cli/hvq
git rev-parse HEAD > .device/cli/COMMIT

golden_bin=$(cargo test --release -p core --no-default-features --features "$features" --locked \
  --test golden --no-run \
  --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "golden" and m.get("executable"):
        print(m["executable"])')
strip -o .device/golden/golden "$golden_bin"
xz -T0 -9e -f .device/golden/golden
cp "$golden_src"/*.json "$golden_src"/hvq_small.safetensors .device/golden/small/
cp "$golden_src"/*.json "$golden_src"/hvq_small_trainstep.safetensors .device/golden/trainstep/
cp "$golden_src"/*.json "$golden_src"/backbone_b4.safetensors .device/golden/b4/

if [ ! -d .gl ] || [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update -qq
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .device/cli .device/golden/* .gl
# What travels besides the carried paths: the tracked files (and untracked, unignored ones).
tree_mib=$(( ($(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -n1 | cut -f1) + 1048575) / 1048576 ))
g=.device/golden
for call in ".device/cli .gl" "$g/golden.xz $g/small" "$g/golden.xz $g/trainstep" "$g/golden.xz $g/b4"; do
  # shellcheck disable=SC2086
  size=$(( $(du -cb $call | tail -n1 | cut -f1) / 1048576 + tree_mib ))
  echo "carry [$call]: $size MiB with the $tree_mib MiB tree (limit 64)"
  [ "$size" -lt 63 ] || echo "WARNING: over what a device call takes" >&2
done
