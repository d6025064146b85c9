#!/usr/bin/env bash
# Installs the pieces of NVIDIA's CUDA toolkit that `scripts/ptx-check.sh` needs on a machine
# without a GPU or a toolkit: `ptxas` (assembles PTX for an architecture, as the driver does when it
# loads a kernel; runs on the CPU), `libdevice.10.bc` (the math library burn's CUDA compiler
# links into any kernel calling exp, tanh, erf, ...) and `nvdisasm` (lists the machine code ptxas
# made: `scripts/sass_mix.py`). They come from NVIDIA's PyPI wheels (`nvidia-cuda-nvcc`,
# `nvidia-nvvm`, `nvidia-cuda-nvdisasm`; NVIDIA's CUDA EULA, not redistributed here), checked
# against the SHA-256 sums below, and are unpacked as a toolkit tree (CUDA_PATH) at
#   ${XDG_DATA_HOME:-$HOME/.local/share}/hvq/cuda-tools-$version/{bin/ptxas,bin/nvdisasm,nvvm/libdevice/}
# Prints that folder on stdout (messages go to stderr). Idempotent; the tree is assembled beside its
# place and renamed into it, so an interrupted run leaves nothing that looks complete.
set -euo pipefail

version=13.5.37
declare -A sha256=(
  [nvidia_cuda_nvcc-$version-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl]=f5c4f7ead5d964fb4af42bbf1e6d3ec3c1e6e9d83b53749f691d387e7fcaa3a7
  [nvidia_nvvm-$version-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl]=c41bfa362e407405163f103c2229f0765f8cc2ed7d148b754dc77f228bf7e070
  [nvidia_cuda_nvdisasm-$version-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl]=d3fdbdd49fa53e2e4aacd3db8259d052bd2b049ececdcb69e92e083c6728e7ca
)

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "cuda-tools: the pinned NVIDIA wheels are for Linux x86-64; this is $(uname -s)-$(uname -m)" >&2
  exit 1
fi

dest="${XDG_DATA_HOME:-$HOME/.local/share}/hvq/cuda-tools-$version"
if [ -x "$dest/bin/ptxas" ] && [ -x "$dest/bin/nvdisasm" ] \
  && [ -f "$dest/nvvm/libdevice/libdevice.10.bc" ]; then
  echo "cuda-tools: ptxas, nvdisasm and libdevice $version already in $dest" >&2
  echo "$dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "cuda-tools: downloading nvidia-cuda-nvcc, nvidia-nvvm, nvidia-cuda-nvdisasm $version (~127 MB) from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_12_x86_64 --python-version 3.12 \
  -d "$tmp/wheels" "nvidia-cuda-nvcc==$version" "nvidia-nvvm==$version" \
  "nvidia-cuda-nvdisasm==$version"
for wheel in "${!sha256[@]}"; do
  if [ ! -f "$tmp/wheels/$wheel" ]; then
    echo "cuda-tools: pip did not fetch $wheel (got: $(ls "$tmp/wheels" | tr '\n' ' '))" >&2
    exit 1
  fi
  echo "${sha256[$wheel]}  $tmp/wheels/$wheel" | sha256sum -c --quiet
done
new="$dest.partial"
rm -rf "$new"
mkdir -p "$new/bin" "$new/nvvm/libdevice"
for wheel in "${!sha256[@]}"; do
  python3 -m zipfile -e "$tmp/wheels/$wheel" "$tmp/unpacked"
done
cp "$tmp/unpacked/nvidia/cu13/bin/ptxas" "$tmp/unpacked/nvidia/cu13/bin/nvdisasm" "$new/bin/"
chmod +x "$new/bin/ptxas" "$new/bin/nvdisasm"
cp "$tmp/unpacked/nvidia/cu13/nvvm/libdevice/libdevice.10.bc" "$new/nvvm/libdevice/"
"$new/bin/ptxas" --version | grep -q "release ${version%.*}" \
  || { echo "cuda-tools: $new/bin/ptxas does not run or is not release ${version%.*}" >&2; exit 1; }
"$new/bin/nvdisasm" --version | grep -q "release ${version%.*}" \
  || { echo "cuda-tools: $new/bin/nvdisasm does not run or is not release ${version%.*}" >&2; exit 1; }
rm -rf "$dest"
mv "$new" "$dest"
echo "cuda-tools: installed ptxas, nvdisasm and libdevice $version in $dest" >&2
echo "$dest"
