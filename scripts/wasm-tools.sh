#!/usr/bin/env bash
# The web build's tools: the wasm32 target and wasm-bindgen-cli at exactly the version of the
# wasm-bindgen crate in Cargo.lock (the CLI refuses modules from another version). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$version" ]; then
  echo "installing wasm-bindgen-cli $version (the wasm-bindgen crate's version in Cargo.lock)"
  # No --locked: the CLI's own lockfile pins a crate version that is no longer on the registry.
  cargo install wasm-bindgen-cli --version "$version"
fi
