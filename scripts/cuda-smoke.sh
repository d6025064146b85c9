#!/usr/bin/env bash
# The CUDA build on a machine without an NVIDIA GPU (CI, the developers' VMs): every way CUDA can be
# missing gives one clear error and no panic text, and `--device auto` falls back to the CPU and
# says why. Stand-in driver libraries (a few lines of C, built here with cc) take the binary past
# the driver check, to the toolkit check, where a real driver is absent.
#
# Usage: bash scripts/cuda-smoke.sh HVQ_BINARY_BUILT_WITH_CUDA   (as cargo built it, not stripped)
set -euo pipefail
HVQ=${1:?usage: cuda-smoke.sh HVQ_BINARY}
HVQ=$(realpath "$HVQ")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

# check NAME EXPECTED_EXIT(0|nonzero) PATTERN... -- COMMAND...
check() {
  local name=$1 want=$2; shift 2
  local patterns=()
  while [ "$1" != "--" ]; do patterns+=("$1"); shift; done
  shift
  local out status=0
  out=$("$@" 2>&1) || status=$?
  local ok=1
  if [ "$want" = 0 ] && [ "$status" != 0 ]; then ok=0; fi
  if [ "$want" = nonzero ] && [ "$status" = 0 ]; then ok=0; fi
  for p in "${patterns[@]}"; do grep -qF -- "$p" <<<"$out" || ok=0; done
  for p in panicked RUST_BACKTRACE RecvError "stack backtrace" "Stack backtrace"; do
    if grep -qF -- "$p" <<<"$out"; then ok=0; fi
  done
  if [ "$ok" = 1 ]; then
    echo "ok    $name"
  else
    echo "FAIL  $name (exit $status; expected exit $want, output must contain: ${patterns[*]}, no panic text)"
    sed 's/^/      | /' <<<"$out"
    failures=$((failures + 1))
  fi
}

# A stand-in libcuda.so.1: cuInit returns $1, cuDeviceGetCount reports $2 devices.
fake_driver() {
  local dir=$tmp/driver-$1-$2
  mkdir -p "$dir"
  cat >"$dir/fake.c" <<EOF
int cuInit(unsigned int flags) { (void)flags; return $1; }
int cuDeviceGetCount(int *count) { *count = $2; return 0; }
EOF
  cc -shared -fPIC -o "$dir/libcuda.so.1" "$dir/fake.c"
  echo "$dir"
}

if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
  echo "cuda-smoke: this machine has an NVIDIA driver library; these checks are for machines without one" >&2
  exit 2
fi

check "no driver: --device cuda names libcuda" nonzero "no NVIDIA driver" "libcuda.so.1" "LD_LIBRARY_PATH" -- \
  "$HVQ" selfcheck --device cuda
check "no driver: auto falls back to the CPU and says why" 0 "device: cpu" "CUDA: no NVIDIA driver" "selfcheck passed" -- \
  "$HVQ" selfcheck
no_device=$(fake_driver 100 0)
check "driver without a device: cuInit's error is named" nonzero "cuInit returned CUDA error 100" "no CUDA-capable device" -- \
  env LD_LIBRARY_PATH="$no_device" "$HVQ" selfcheck --device cuda
zero=$(fake_driver 0 0)
check "driver that sees no device" nonzero "reports no CUDA device" -- \
  env LD_LIBRARY_PATH="$zero" "$HVQ" selfcheck --device cuda
one=$(fake_driver 0 1)
check "driver but no toolkit: CUDA_PATH is named" nonzero "CUDA_PATH=$tmp/no-toolkit" "libdevice.10.bc" -- \
  env LD_LIBRARY_PATH="$one" CUDA_PATH="$tmp/no-toolkit" "$HVQ" selfcheck --device cuda
check "driver but no toolkit: auto falls back to the CPU" 0 "device: cpu" "CUDA: CUDA_PATH=" "selfcheck passed" -- \
  env LD_LIBRARY_PATH="$one" CUDA_PATH="$tmp/no-toolkit" "$HVQ" selfcheck
check "training with --device cuda fails before reading data" nonzero "no NVIDIA driver" -- \
  "$HVQ" train --device cuda --data "folder:$tmp/none" --out "$tmp/run" --epochs 1

# The LLVM back ends linked in: NVPTX (the kernels) and X86 (the host) only, as scripts/cuda-llvm.sh
# cuts LLVM's initialise-all lists; any other would mean the cut was lost (and ~60 MB more binary).
# The binary must keep its symbols (cargo's release build does; a stripped copy cannot be checked).
initialisers=$(nm "$HVQ" 2>/dev/null | awk '$3 ~ /^LLVMInitialize[A-Za-z0-9]+Target$/ { print $3 }' | sort | tr '\n' ' ')
if [ "$initialisers" = "LLVMInitializeNVPTXTarget LLVMInitializeX86Target " ]; then
  echo "ok    LLVM back ends linked: NVPTX and X86 only"
else
  echo "FAIL  LLVM back ends linked: ${initialisers:-none found (a stripped binary?)} (expected NVPTX and X86 only; see scripts/cuda-llvm.sh)"
  failures=$((failures + 1))
fi

if [ "$failures" -gt 0 ]; then
  echo "cuda-smoke: $failures check(s) failed"
  exit 1
fi
echo "cuda-smoke: all checks passed"
