#!/usr/bin/env bash
# hvq vs PyTorch on one NVIDIA GPU, in one go, from a fresh copy of the repository:
#   1. cargo build --release -p core --features cuda   (falls back to the wgpu-only build if the
#      CUDA build fails, so the rest still runs; the failure is reported)
#   2. hvq bench --device cuda and --device wgpu (Vulkan, NVIDIA driver) for each config
#   3. a venv with torch (PyPI) + safetensors + numpy if missing, then
#      scripts/pytorch/bench_torch.py --device cuda for the same configs on the same GPU
#   4. a table: median end-to-end ms per image, images/s, ratio hvq/PyTorch, training steps,
#      per-stage times; GPU name and date. Everything lands in bench-results/<date>/.
#
# Usage: bash scripts/gpu-bench.sh [--batch 8] [--runs 6] [--configs "official default"]
#                                   [--out DIR] [--skip-build] [--hvq BINARY] [--no-cuda] [--no-wgpu]
#                                   [--no-torch] [--precisions "f32 tf32"] [--time-limit SECONDS]
#                                   [--no-kernels] [--matmul-routines "simple double gemm"]
#                                   [--attention-ab] [--device-thread-ab] [--compiler-ab]
#   --hvq BINARY        use this hvq binary (built elsewhere, e.g. on a machine that can build) and
#                       skip the build; its CUDA runs are tried unless --no-cuda
#   --no-cuda           no `hvq --device cuda` runs (a binary built without the `cuda` feature)
#   --time-limit S      stop any one benchmark run after S seconds (default: no limit)
#   --precisions LIST   the CUDA runs of hvq and PyTorch at each of these (default f32): f32 is strict
#                       fp32 in both (hvq's default; PyTorch with TF32 off), tf32 lets both use TF32
#                       tensor cores (hvq --precision tf32, PyTorch allow_tf32); a tf32 run's ratio
#                       refers to PyTorch's tf32 run. wgpu runs at f32 only (it has no TF32 products).
#   --tf32              short for --precisions "f32 tf32"
#   --no-kernels        no kernel profiles: by default each hvq and PyTorch run ends with one
#                       profiled pass (hvq bench --kernels, bench_torch.py --kernels: launches and
#                       device time per stage and kernel, in its log and JSON, side by side in the
#                       summary); a run whose profile fails is repeated without it
#   --matmul-routines LIST
#                       also time hvq on CUDA (else on wgpu via the NVIDIA Vulkan driver; f32, the
#                       first config) with each of these routines for the products no tensor core
#                       takes (HVQ_GPU_MATMUL: simple, simple-min-tile, double, double-min-tile,
#                       gemm, tiled: hvq's own kernel), each checked against the CPU first (hvq
#                       selfcheck); a table of them beside the default run (auto) in
#                       matmul/summary.txt
#   --attention-ab      also time hvq (on CUDA, else on wgpu via the NVIDIA Vulkan driver; f32, the
#                       first config) with both attentions forced to hvq's kernels (inference
#                       HVQ_GPU_ATTENTION=split, training HVQ_TRAIN_ATTENTION=fused) and to burn's
#                       (flash at inference, training composed from burn's operations), beside the
#                       default run's (auto for both: the faster per kind of attention, the
#                       timings of both in the default run's report):
#                       attention/*.json and a table in attention/summary.txt
#                       (--train-attention-ab: the same)
#   --compiler-ab       also time hvq on wgpu via the NVIDIA Vulkan driver (f32, the first config)
#                       with its kernels compiled to SPIR-V by CubeCL itself
#                       (HVQ_WGPU_COMPILER=spirv) beside the default run's WGSL (which wgpu's
#                       naga translates), checked against the CPU first (hvq selfcheck):
#                       compiler/*.json and a table in compiler/summary.txt
#   --device-thread-ab  also time hvq on CUDA (f32, the first config) with the device's work run on
#                       the thread that issues it (HVQ_DEVICE_THREAD=caller, the patched
#                       cubecl-common) beside the default run's runner thread, checked against the
#                       CPU first (hvq selfcheck): device-thread/caller-CFG.json and a table of
#                       end to end, training step, their host-queued parts and one operation's cost
# Environment:
#   CARGO_TARGET_DIR    where cargo builds (default: ./target)
#   HVQ_TORCH_VENV      venv for PyTorch (default: ~/.cache/hvq/torch-venv)
#   HVQ_PYTHON          use this Python (with torch, safetensors, numpy) instead of the venv
#   HVQ_TORCH_PIP_ARGS  extra pip arguments for torch, e.g. "--index-url https://download.pytorch.org/whl/cu126"
#                       when the driver is older than the PyPI wheel's CUDA (the default is plain PyPI)
#   HVQ_FORCE_WGPU=1    run wgpu even when no NVIDIA Vulkan driver file is found
#   HVQ_GOLDEN_DIR      golden tensors (default ../shared/golden): if present, the PyTorch reference is
#                       first checked against them on the GPU (scripts/pytorch/check_golden.py)
# Exit status: 0 when every run succeeded, 1 when some failed (the table shows what ran), 2 on
# a setup error (no GPU, no cargo, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# shellcheck source=nvidia-icd.sh
. scripts/nvidia-icd.sh

BATCH=8
RUNS=6
CONFIGS="official default"
OUT=""
SKIP_BUILD=0
HVQ_BIN=""
DO_CUDA=1
TIME_LIMIT=""
DO_WGPU=1
DO_TORCH=1
PRECISIONS="f32"
KERNELS=1
MATMUL_ROUTINES=""
ATTENTION_AB=0
DEVICE_THREAD_AB=0
COMPILER_AB=0

log() { printf '[gpu-bench] %s\n' "$*"; }
warn() { printf '[gpu-bench] WARNING: %s\n' "$*" >&2; }
die() { printf '[gpu-bench] ERROR: %s\n' "$*" >&2; exit 2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --batch) BATCH=${2:?--batch needs a value}; shift 2 ;;
    --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
    --configs) CONFIGS=${2:?--configs needs a value}; shift 2 ;;
    --out) OUT=${2:?--out needs a value}; shift 2 ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    --hvq) HVQ_BIN=${2:?--hvq needs a path}; SKIP_BUILD=1; shift 2 ;;
    --no-cuda) DO_CUDA=0; shift ;;
    --time-limit) TIME_LIMIT=${2:?--time-limit needs a value}; shift 2 ;;
    --no-wgpu) DO_WGPU=0; shift ;;
    --no-torch) DO_TORCH=0; shift ;;
    --precisions) PRECISIONS=${2:?--precisions needs a list}; shift 2 ;;
    --tf32) PRECISIONS="f32 tf32"; shift ;;
    --no-kernels) KERNELS=0; shift ;;
    --matmul-routines) MATMUL_ROUTINES=${2:?--matmul-routines needs a list}; shift 2 ;;
    --attention-ab|--train-attention-ab) ATTENTION_AB=1; shift ;;
    --device-thread-ab) DEVICE_THREAD_AB=1; shift ;;
    --compiler-ab) COMPILER_AB=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
case "$BATCH$RUNS${TIME_LIMIT}" in *[!0-9]*) die "--batch, --runs and --time-limit must be positive integers" ;; esac
# A run that hangs (a driver problem, say) must not take the rest of the session with it.
LIMIT=()
[ -n "$TIME_LIMIT" ] && LIMIT=(timeout --kill-after=10 "$TIME_LIMIT")
for c in $CONFIGS; do
  case "$c" in official|default) ;; *) die "unknown config '$c' (official or default)" ;; esac
done
for p in $PRECISIONS; do
  case "$p" in f32|tf32) ;; *) die "unknown precision '$p' (f32 or tf32)" ;; esac
done
for r in $MATMUL_ROUTINES; do
  case "$r" in simple|simple-min-tile|double|double-min-tile|gemm|tiled) ;;
    *) die "unknown matmul routine '$r' (simple, simple-min-tile, double, double-min-tile, gemm, tiled)" ;; esac
done
# A report's device part: cuda at f32, cuda_tf32 at tf32 (compare.py pairs runs by it).
run_name() { [ "$2" = f32 ] && echo "$1" || echo "$1_$2"; }

# ---- the GPU --------------------------------------------------------------------------------
command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs a machine with an NVIDIA GPU and its driver"
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n1) || true
[ -n "$GPU" ] || die "nvidia-smi lists no GPU (is the driver loaded? try 'nvidia-smi')"
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)
DATE=$(date -u +%Y-%m-%d_%H%M%SZ)
OUT=${OUT:-bench-results/$DATE}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
log "GPU: $GPU (driver $DRIVER); date $DATE; batch $BATCH, $RUNS runs; configs: $CONFIGS"
log "results in $OUT"
{
  echo "date: $DATE"
  echo "gpu: $GPU"
  echo "driver: $DRIVER"
  echo "host: $(uname -a)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //') ($(nproc) threads)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "batch: $BATCH  runs: $RUNS  configs: $CONFIGS  precisions (cuda): $PRECISIONS"
} > "$OUT/environment.txt"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true

FAILED=()

# ---- hvq ------------------------------------------------------------------------------------
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
HVQ=${HVQ_BIN:-$TARGET/release/hvq}
CUDA_BUILT=0
BUILD_OK=1
if [ "$SKIP_BUILD" = 1 ]; then
  [ -x "$HVQ" ] || die "--skip-build but $HVQ does not exist"
  CUDA_BUILT=$DO_CUDA
  log "using the existing $HVQ (no build)"
else
  command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
  echo "rust: $(rustc --version 2>/dev/null), $(cargo --version)" >> "$OUT/environment.txt"
  if [ "$DO_CUDA" = 1 ]; then
    log "building hvq with CUDA (cargo build --release -p core --features cuda; log: $OUT/build-cuda.log) ..."
    if cargo build --release -p core --features cuda > "$OUT/build-cuda.log" 2>&1; then
      CUDA_BUILT=1
      log "CUDA build done"
    else
      tail -n 25 "$OUT/build-cuda.log" >&2 || true
      warn "the CUDA build failed (see $OUT/build-cuda.log). burn's CUDA build script downloads an LLVM bundle, so the machine needs internet access for the first build."
      FAILED+=("build --features cuda")
    fi
  fi
  # Without CUDA (--no-cuda, or its build failed): the wgpu runs can still go ahead.
  if [ "$CUDA_BUILT" = 0 ]; then
    log "building hvq without CUDA (log: $OUT/build-wgpu.log) ..."
    if ! cargo build --release -p core > "$OUT/build-wgpu.log" 2>&1; then
      tail -n 25 "$OUT/build-wgpu.log" >&2 || true
      warn "the build without CUDA failed (see $OUT/build-wgpu.log): no hvq runs"
      BUILD_OK=0
      FAILED+=("build (wgpu)")
    fi
  fi
fi

# One benchmark run: the command's output goes to LOG; its first lines are shown when it succeeds,
# its last ones when it fails (then its JSON, possibly partial, is removed and WHAT is recorded).
run_bench() { # what json log command...
  local what=$1 json=$2 logf=$3
  shift 3
  if "${LIMIT[@]}" "$@" > "$logf" 2>&1; then
    sed -n '1,20p' "$logf"
  else
    tail -n 15 "$logf" >&2 || true
    warn "$what failed (log: $logf)"
    rm -f "$json"
    FAILED+=("$what")
  fi
}

run_hvq() { # device config precision [VAR=value ...]
  local dev=$1 cfg=$2 precision=$3
  local name; name=$(run_name "$dev" "$precision")
  local json="$OUT/hvq-$name-$cfg.json"
  shift 3
  local kernels=()
  [ "$KERNELS" = 1 ] && kernels=(--kernels)
  log "hvq bench --device $dev --config $cfg --batch $BATCH --runs $RUNS --precision $precision ${kernels[*]}"
  run_bench "hvq $name $cfg" "$json" "$OUT/hvq-$name-$cfg.log" \
    env "$@" "$HVQ" bench --device "$dev" --config "$cfg" --batch "$BATCH" --runs "$RUNS" \
    --precision "$precision" --json "$json" "${kernels[@]}"
  # The kernel profile is one extra pass after the timed runs; should it be what failed, the
  # timings are still worth having: once more without it.
  if [ "$KERNELS" = 1 ] && [ ! -f "$json" ]; then
    warn "retrying hvq $name $cfg without --kernels"
    unset 'FAILED[${#FAILED[@]}-1]'
    run_bench "hvq $name $cfg" "$json" "$OUT/hvq-$name-$cfg-no-kernels.log" \
      env "$@" "$HVQ" bench --device "$dev" --config "$cfg" --batch "$BATCH" --runs "$RUNS" \
      --precision "$precision" --json "$json"
  fi
}

if [ "$BUILD_OK" = 1 ] && [ -x "$HVQ" ]; then
  if [ "$CUDA_BUILT" = 1 ]; then
    for precision in $PRECISIONS; do
      for cfg in $CONFIGS; do run_hvq cuda "$cfg" "$precision"; done
    done
  fi
  # The routines for products without tensor cores, against each other (f32, first config): on
  # CUDA when it was built, else on wgpu through the NVIDIA Vulkan driver.
  AB_DEV=""; AB_ENV=()
  if [ "$CUDA_BUILT" = 1 ]; then
    AB_DEV=cuda
  elif [ "$DO_WGPU" = 1 ] && [ -n "$(nvidia_icd)" ]; then
    AB_DEV=wgpu; AB_ENV=(VK_DRIVER_FILES="$(nvidia_icd)" VK_ICD_FILENAMES="$(nvidia_icd)" WGPU_BACKEND=vulkan)
  fi
  if [ -n "$AB_DEV" ] && [ -n "$MATMUL_ROUTINES" ]; then
    mkdir -p "$OUT/matmul"
    cfg=${CONFIGS%% *}
    for routine in $MATMUL_ROUTINES; do
      log "HVQ_GPU_MATMUL=$routine: selfcheck, then hvq bench --device $AB_DEV --config $cfg"
      if env "${AB_ENV[@]}" HVQ_GPU_MATMUL="$routine" "${LIMIT[@]}" "$HVQ" selfcheck --device "$AB_DEV" \
          > "$OUT/matmul/selfcheck-$routine.log" 2>&1; then
        tail -n 1 "$OUT/matmul/selfcheck-$routine.log"
        run_bench "hvq $AB_DEV $cfg matmul $routine" "$OUT/matmul/HVQ_GPU_MATMUL-$routine-$cfg.json" \
          "$OUT/matmul/HVQ_GPU_MATMUL-$routine-$cfg.log" \
          env "${AB_ENV[@]}" HVQ_GPU_MATMUL="$routine" "$HVQ" bench --device "$AB_DEV" --config "$cfg" \
          --batch "$BATCH" --runs "$RUNS" --json "$OUT/matmul/HVQ_GPU_MATMUL-$routine-$cfg.json"
      else
        tail -n 5 "$OUT/matmul/selfcheck-$routine.log" >&2 || true
        warn "HVQ_GPU_MATMUL=$routine: selfcheck failed, not timed"
        FAILED+=("matmul $routine selfcheck")
      fi
    done
  fi
  # The attentions forced to one side, against the default (auto at inference and in training:
  # each kind of attention timed on both and run on the faster, so these are the whole pipeline
  # on each side): hvq's kernels (split, fused) and burn's (flash, composed operations).
  if [ -n "$AB_DEV" ] && [ "$ATTENTION_AB" = 1 ]; then
    mkdir -p "$OUT/attention"
    cfg=${CONFIGS%% *}
    for side in "attention_hvq HVQ_GPU_ATTENTION=split HVQ_TRAIN_ATTENTION=fused" \
        "attention_burn HVQ_GPU_ATTENTION=flash HVQ_TRAIN_ATTENTION=composed"; do
      read -r name inference training <<< "$side"
      log "$inference $training: hvq bench --device $AB_DEV --config $cfg"
      run_bench "hvq $AB_DEV $cfg $inference $training" "$OUT/attention/$name-$cfg.json" \
        "$OUT/attention/$name-$cfg.log" \
        env "${AB_ENV[@]}" "$inference" "$training" "$HVQ" bench --device "$AB_DEV" \
        --config "$cfg" --batch "$BATCH" --runs "$RUNS" --json "$OUT/attention/$name-$cfg.json"
    done
  fi
  # The device's work on the issuing thread (HVQ_DEVICE_THREAD) against the default's runner.
  if [ "$CUDA_BUILT" = 1 ] && [ "$DEVICE_THREAD_AB" = 1 ]; then
    mkdir -p "$OUT/device-thread"
    cfg=${CONFIGS%% *}
    log "HVQ_DEVICE_THREAD=caller: selfcheck, then hvq bench --device cuda --config $cfg"
    if HVQ_DEVICE_THREAD=caller "${LIMIT[@]}" "$HVQ" selfcheck --device cuda \
        > "$OUT/device-thread/selfcheck-caller.log" 2>&1; then
      tail -n 1 "$OUT/device-thread/selfcheck-caller.log"
      run_bench "hvq cuda $cfg device work on the caller thread" "$OUT/device-thread/caller-$cfg.json" \
        "$OUT/device-thread/caller-$cfg.log" \
        env HVQ_DEVICE_THREAD=caller "$HVQ" bench --device cuda --config "$cfg" --batch "$BATCH" \
        --runs "$RUNS" --json "$OUT/device-thread/caller-$cfg.json"
      python3 - "$OUT/hvq-cuda-$cfg.json" "$OUT/device-thread/caller-$cfg.json" <<'PY' | tee "$OUT/device-thread/summary.txt" || true
import json, sys
rows = [("end to end", "end_to_end"), ("end to end, host queued", "end_to_end_queued"),
        ("train step (cached)", "train_step_cached"), ("train step, host queued", "train_step_queued")]
runs = []
for path in sys.argv[1:]:
    try:
        runs.append(json.load(open(path)))
    except (OSError, ValueError):
        runs.append(None)
cell = lambda r, key: "—" if not r or not r.get(key) else f"{r[key]['median_ms']:.1f}"
print("| median ms | runner thread (default) | caller thread |\n|---|---|---|")
for label, key in rows:
    print(f"| {label} | " + " | ".join(cell(r, key) for r in runs) + " |")
us = lambda r: "—" if not r or r.get("operation_host_us") is None else f"{r['operation_host_us']:.1f}"
print("| one operation, host µs | " + " | ".join(us(r) for r in runs) + " |")
PY
    else
      tail -n 5 "$OUT/device-thread/selfcheck-caller.log" >&2 || true
      warn "HVQ_DEVICE_THREAD=caller: selfcheck failed, not timed"
      FAILED+=("device thread caller selfcheck")
    fi
  fi
  if [ "$DO_WGPU" = 1 ]; then
    ICD=$(nvidia_icd)
    if [ -n "$ICD" ]; then
      log "wgpu: Vulkan driver file $ICD"
      command -v vulkaninfo >/dev/null && VK_DRIVER_FILES=$ICD VK_ICD_FILENAMES=$ICD vulkaninfo --summary > "$OUT/vulkaninfo.txt" 2>&1 || true
      for cfg in $CONFIGS; do run_hvq wgpu "$cfg" f32 VK_DRIVER_FILES="$ICD" VK_ICD_FILENAMES="$ICD" WGPU_BACKEND=vulkan; done
      # The same binary with its kernels compiled to SPIR-V by CubeCL instead of the default's
      # WGSL (which naga translates), beside the default run just above.
      if [ "$COMPILER_AB" = 1 ]; then
        mkdir -p "$OUT/compiler"
        cfg=${CONFIGS%% *}
        wgpu_env=(VK_DRIVER_FILES="$ICD" VK_ICD_FILENAMES="$ICD" WGPU_BACKEND=vulkan HVQ_WGPU_COMPILER=spirv)
        log "HVQ_WGPU_COMPILER=spirv: selfcheck, then hvq bench --device wgpu --config $cfg"
        if env "${wgpu_env[@]}" "${LIMIT[@]}" "$HVQ" selfcheck --device wgpu \
            > "$OUT/compiler/selfcheck-spirv.log" 2>&1; then
          tail -n 1 "$OUT/compiler/selfcheck-spirv.log"
          run_bench "hvq wgpu $cfg HVQ_WGPU_COMPILER=spirv" "$OUT/compiler/HVQ_WGPU_COMPILER-$cfg.json" \
            "$OUT/compiler/HVQ_WGPU_COMPILER-$cfg.log" \
            env "${wgpu_env[@]}" "$HVQ" bench --device wgpu --config "$cfg" --batch "$BATCH" \
            --runs "$RUNS" --json "$OUT/compiler/HVQ_WGPU_COMPILER-$cfg.json"
        else
          tail -n 5 "$OUT/compiler/selfcheck-spirv.log" >&2 || true
          warn "HVQ_WGPU_COMPILER=spirv: selfcheck failed, not timed"
          FAILED+=("spirv compiler selfcheck")
        fi
        python3 scripts/pytorch/ab_table.py "$OUT/hvq-wgpu-$cfg.json" "$OUT/compiler/HVQ_WGPU_COMPILER-$cfg.json" \
          | tee "$OUT/compiler/summary.txt" || true
      fi
    elif [ "${HVQ_FORCE_WGPU:-0}" = 1 ]; then
      warn "no NVIDIA Vulkan driver file (nvidia_icd.json) found; running wgpu anyway (HVQ_FORCE_WGPU=1): it may not be on the GPU"
      for cfg in $CONFIGS; do run_hvq wgpu "$cfg" f32 WGPU_BACKEND=vulkan; done
    else
      warn "no NVIDIA Vulkan driver file (nvidia_icd.json; see scripts/nvidia-icd.sh for where it is looked for): skipping wgpu, which would run on another Vulkan driver (e.g. lavapipe on the CPU). Install the driver's Vulkan part (in containers, NVIDIA_DRIVER_CAPABILITIES must include 'graphics'), or set HVQ_FORCE_WGPU=1."
      FAILED+=("wgpu (no NVIDIA Vulkan driver)")
    fi
  fi
  # The A/B tables beside the default run (which, on wgpu, ran just above).
  if [ -n "$AB_DEV" ] && [ -n "$MATMUL_ROUTINES" ]; then
    cfg=${CONFIGS%% *}
    python3 scripts/pytorch/ab_table.py "$OUT/hvq-$AB_DEV-$cfg.json" "$OUT"/matmul/HVQ_GPU_MATMUL-*-"$cfg".json \
      | tee "$OUT/matmul/summary.txt" || true
  fi
  if [ -n "$AB_DEV" ] && [ "$ATTENTION_AB" = 1 ]; then
    cfg=${CONFIGS%% *}
    python3 scripts/pytorch/ab_table.py "$OUT/hvq-$AB_DEV-$cfg.json" "$OUT"/attention/*-"$cfg".json \
      | tee "$OUT/attention/summary.txt" || true
  fi
fi

# ---- PyTorch --------------------------------------------------------------------------------
torch_ok() { "$1" -c 'import torch, safetensors, numpy' >/dev/null 2>&1; }
PY=""
if [ "$DO_TORCH" = 1 ]; then
  VENV=${HVQ_TORCH_VENV:-$HOME/.cache/hvq/torch-venv}
  if [ -n "${HVQ_PYTHON:-}" ]; then
    torch_ok "$HVQ_PYTHON" && PY=$HVQ_PYTHON || warn "HVQ_PYTHON=$HVQ_PYTHON cannot import torch, safetensors and numpy"
  elif [ -x "$VENV/bin/python" ] && torch_ok "$VENV/bin/python"; then
    PY=$VENV/bin/python
    log "PyTorch venv: $VENV (existing)"
  else
    log "setting up the PyTorch venv in $VENV (pip install torch safetensors numpy from PyPI; several GB) ..."
    if { [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"; } > "$OUT/torch-venv.log" 2>&1 \
      && "$VENV/bin/python" -m pip install ${HVQ_TORCH_PIP_ARGS:-} torch safetensors numpy >> "$OUT/torch-venv.log" 2>&1 \
      && torch_ok "$VENV/bin/python"; then
      PY=$VENV/bin/python
    else
      tail -n 15 "$OUT/torch-venv.log" >&2 || true
      warn "could not set up the venv (log: $OUT/torch-venv.log; on Debian/Ubuntu 'python3 -m venv' needs the python3-venv package)"
      if command -v python3 >/dev/null && torch_ok python3; then
        PY=$(command -v python3)
        warn "using the system python3, which has torch"
      fi
    fi
  fi
  if [ -n "$PY" ]; then
    if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
      warn "torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>/dev/null) cannot use the GPU (driver $DRIVER). If the driver is older than the wheel's CUDA, install a matching wheel: HVQ_TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cu126' with a fresh HVQ_TORCH_VENV."
      FAILED+=("PyTorch (no CUDA)")
      PY=""
    fi
  else
    FAILED+=("PyTorch (not installed)")
  fi
  if [ -n "$PY" ]; then
    echo "python: $("$PY" -c 'import torch, sys; print(sys.version.split()[0], "torch", torch.__version__, "CUDA", torch.version.cuda)')" >> "$OUT/environment.txt"
    # The PyTorch reference against the official code's golden tensors, on this GPU (if present).
    GOLDEN=${HVQ_GOLDEN_DIR:-$ROOT/../shared/golden}
    if [ -f "$GOLDEN/hvq_small.safetensors" ]; then
      log "check_golden.py --device cuda (golden tensors in $GOLDEN)"
      if "${LIMIT[@]}" "$PY" scripts/pytorch/check_golden.py --device cuda --golden "$GOLDEN" > "$OUT/torch-golden-cuda.txt" 2>&1; then
        tail -n 1 "$OUT/torch-golden-cuda.txt"
      else
        tail -n 15 "$OUT/torch-golden-cuda.txt" >&2 || true
        warn "the PyTorch reference does not match the golden tensors on this GPU (see $OUT/torch-golden-cuda.txt)"
        FAILED+=("PyTorch golden check (cuda)")
      fi
    else
      log "no golden tensors at $GOLDEN (set HVQ_GOLDEN_DIR to check the PyTorch reference on this GPU first)"
    fi
    for precision in $PRECISIONS; do
      name=$(run_name cuda "$precision")
      TF32=""; [ "$precision" = tf32 ] && TF32="--tf32"
      TORCH_KERNELS=""; [ "$KERNELS" = 1 ] && TORCH_KERNELS="--kernels"
      for cfg in $CONFIGS; do
        json="$OUT/torch-$name-$cfg.json"
        log "bench_torch.py --device cuda --config $cfg --batch $BATCH --runs $RUNS --train-batch $BATCH $TF32 $TORCH_KERNELS"
        # --train-batch = --batch: hvq bench times its training steps at --batch.
        run_bench "PyTorch $name $cfg" "$json" "$OUT/torch-$name-$cfg.log" \
          "$PY" scripts/pytorch/bench_torch.py --device cuda --config "$cfg" --batch "$BATCH" --runs "$RUNS" \
          --train-batch "$BATCH" $TF32 $TORCH_KERNELS --json "$json"
        # As for hvq: should the profile be what failed, the timings without it.
        if [ -n "$TORCH_KERNELS" ] && [ ! -f "$json" ]; then
          warn "retrying PyTorch $name $cfg without --kernels"
          unset 'FAILED[${#FAILED[@]}-1]'
          run_bench "PyTorch $name $cfg" "$json" "$OUT/torch-$name-$cfg-no-kernels.log" \
            "$PY" scripts/pytorch/bench_torch.py --device cuda --config "$cfg" --batch "$BATCH" --runs "$RUNS" \
            --train-batch "$BATCH" $TF32 --json "$json"
        fi
      done
    done
  fi
fi

# ---- the table ------------------------------------------------------------------------------
echo
SUMMARY_PY=$(command -v python3 || true)  # compare.py needs only the standard library
SUMMARY_PY=${SUMMARY_PY:-$PY}
shopt -s nullglob
REPORTS=("$OUT"/hvq-*.json "$OUT"/torch-*.json)
shopt -u nullglob
if [ ${#REPORTS[@]} -gt 0 ]; then
  "$SUMMARY_PY" scripts/pytorch/compare.py "$OUT" --ref cuda --gpu "$GPU" --date "$DATE" | tee "$OUT/summary.txt" \
    || FAILED+=("summary table")
else
  warn "no run produced a report"
fi
echo
if [ ${#FAILED[@]} -gt 0 ]; then
  warn "incomplete: ${FAILED[*]}"
  log "all output (reports, logs, summary.md) is in $OUT"
  exit 1
fi
log "done: reports, logs and summary.md are in $OUT"
