#!/usr/bin/env bash
# Serve web/dist (built by web/build.sh) on http://127.0.0.1:${PORT:-8080}/ only.
set -euo pipefail
dist="$(cd "$(dirname "$0")" && pwd)/dist"
[ -f "$dist/index.html" ] || { echo "web/dist is missing: run web/build.sh first" >&2; exit 1; }
echo "serving $dist on http://127.0.0.1:${PORT:-8080}/"
exec python3 -m http.server "${PORT:-8080}" --bind 127.0.0.1 --directory "$dist"
