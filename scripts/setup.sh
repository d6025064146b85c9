#!/usr/bin/env bash
# One-time machine set-up for building and testing hvq on Debian/Ubuntu (run as root or with sudo):
# Mesa's lavapipe gives wgpu a Vulkan device on machines without a GPU.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
pkgs="mesa-vulkan-drivers libvulkan1"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust from rustup first" >&2; exit 1; }
echo "setup done: $(cargo --version); Vulkan ICDs: $(ls /usr/share/vulkan/icd.d 2>/dev/null | tr '\n' ' ')"
