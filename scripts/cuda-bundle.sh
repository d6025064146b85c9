#!/usr/bin/env bash
# Builds what scripts/cuda-checks.sh needs on a GPU machine that cannot build (no cargo, no
# network), into folders that travel with the working tree (git-ignored, named in `carry`):
#   .device/cli/hvq.xz              hvq with --features cuda, stripped, xz-compressed (~37 MB)
#   .device/golden/golden.xz        the golden parity test binary with --features cuda (stripped, xz)
#   .device/golden/data/            the golden tensors ($HVQ_GOLDEN_DIR, default ../shared/golden)
#   .gl/                            the Vulkan/EGL loader packages (wgpu on the NVIDIA driver)
# The lent machine takes at most 64 MiB per call, so the CLI and the golden checks go in two calls:
#   carry [".device/cli", ".gl"]:    bash scripts/cuda-checks.sh --hvq .device/cli/hvq.xz
#   carry [".device/golden"]:        HVQ_GOLDEN_DIR=.device/golden/data bash scripts/cuda-checks.sh \
#                                      --golden-test .device/golden/golden.xz
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
golden_src="${HVQ_GOLDEN_DIR:-../shared/golden}"
mkdir -p .device/cli .device/golden/data

cargo build --release -p core --features cuda --locked
strip -o .device/cli/hvq "$CARGO_TARGET_DIR/release/hvq"
xz -T0 -6 -f .device/cli/hvq

golden_bin=$(cargo test --release -p core --features cuda --locked --test golden --no-run \
  --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "golden" and m.get("executable"):
        print(m["executable"])')
strip -o .device/golden/golden "$golden_bin"
xz -T0 -6 -f .device/golden/golden
cp "$golden_src"/*.safetensors "$golden_src"/*.json .device/golden/data/

if [ ! -d .gl ] || [ -z "$(ls .gl/*.deb 2>/dev/null)" ]; then
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update -qq
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
du -sh .device/cli .device/golden .gl
for call in ".device/cli .gl" ".device/golden"; do
  # shellcheck disable=SC2086
  size=$(du -cm $call | tail -n1 | cut -f1)
  echo "carry [$call]: $size MiB (+ the working tree)"
  [ "$size" -lt 60 ] || echo "WARNING: over the 64 MiB a device call takes with the tree" >&2
done
