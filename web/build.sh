#!/usr/bin/env bash
# Build the static site into web/dist: the wasm crate (release, wasm32), its JavaScript bindings
# from wasm-bindgen-cli at exactly the crate's version (installed if missing), the page, the shared
# overlay shader, the shipped default model and the samples, plus manifest.json (file sizes for
# the download progress, the offline cache's file list and version).
#
#   web/build.sh            # then: web/serve.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/hvq-target}"
dist="$root/web/dist"

bash scripts/wasm-tools.sh

# wasm-release: release with LTO and one codegen unit (22 MB of wasm instead of 34 MB).
cargo build -p web --profile wasm-release --target wasm32-unknown-unknown --locked
rm -rf "$dist"
mkdir -p "$dist/pkg" "$dist/weights/elpv-lite0" "$dist/samples"
wasm-bindgen --target web --no-typescript --remove-name-section --remove-producers-section --out-dir "$dist/pkg" \
  "$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/hvq_web.wasm"

cp web/static/* "$dist/"
cp shaders/overlay.wgsl "$dist/"
cp weights/efficientnet-lite0.safetensors "$dist/weights/"
cp weights/elpv-lite0/config.json weights/elpv-lite0/model.safetensors weights/elpv-lite0/MODEL_CARD.md \
  "$dist/weights/elpv-lite0/"
cp samples/*.png samples/README.md "$dist/samples/"

python3 - "$dist" <<'PY'
import hashlib, json, os, sys
dist = sys.argv[1]
def entry(path):
    return {"path": path, "bytes": os.path.getsize(os.path.join(dist, path))}
files = sorted(
    os.path.relpath(os.path.join(d, f), dist)
    for d, _, fs in os.walk(dist) for f in fs if f != "manifest.json"
)
digest = hashlib.sha256()
for f in files:
    with open(os.path.join(dist, f), "rb") as fh:
        digest.update(f.encode() + b"\0" + fh.read())
samples = sorted(f for f in files if f.startswith("samples/") and f.endswith(".png"))
manifest = {
    "version": digest.hexdigest()[:16],
    "wasm": entry("pkg/hvq_web_bg.wasm"),
    "model": {
        "config": entry("weights/elpv-lite0/config.json"),
        "weights": entry("weights/elpv-lite0/model.safetensors"),
        "backbone": entry("weights/efficientnet-lite0.safetensors"),
    },
    "samples": [{"name": os.path.basename(s), "path": s} for s in samples],
    "files": files + ["manifest.json"],
}
with open(os.path.join(dist, "manifest.json"), "w") as fh:
    json.dump(manifest, fh, indent=1)
download = manifest["wasm"]["bytes"] + sum(v["bytes"] for v in manifest["model"].values())
print(f"web/dist: wasm {manifest['wasm']['bytes'] / 1e6:.1f} MB, model download in all {download / 1e6:.1f} MB")
PY
