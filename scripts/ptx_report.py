#!/usr/bin/env python3
"""The tables of scripts/ptx-check.sh: every distinct kernel the `hvq ptx-check` runs compiled,
for each NVIDIA architecture, whether burn's CUDA compiler (cubecl-llvm) and NVIDIA's ptxas took
it, and what ptxas allotted (registers per thread, spilled bytes), with the shared memory its
launch reserves and the occupancy these allow (resident warps per multiprocessor out of the
part's most, as CUDA's occupancy calculator reckons): a kernel at low occupancy hides memory
latency only with the work each thread has in flight.

One line per architecture, then one row per kernel type for the first architecture (the H100/H200
the project measures on).

Usage: ptx_report.py OUT   (OUT as ptx-check.sh fills it). Writes OUT/report.json.
Exit status 1 when a compilation was refused by either compiler or no kernel was seen."""

import glob
import json
import os
import re
import sys

out = sys.argv[1]

# Per multiprocessor, by compute capability (CUDA C Programming Guide, "Technical Specifications
# per Compute Capability"): registers, resident warps, resident cubes, shared memory (bytes).
# Registers are allotted per warp in units of 256, shared memory in units of 128 bytes, and each
# cube takes 1 KiB of shared memory for the system (8.0 and later).
PARTS = {
    "sm_75": (65536, 32, 16, 65536, 0),
    "sm_80": (65536, 64, 32, 167936, 1024),
    "sm_86": (65536, 48, 16, 102400, 1024),
    "sm_89": (65536, 48, 24, 102400, 1024),
    "sm_90a": (65536, 64, 32, 233472, 1024),
}
REGISTER_UNIT, SHARED_UNIT = 256, 128

kernels = {}  # (key, architecture) -> record, in first-seen order
architectures = []
for path in sorted(glob.glob(os.path.join(out, "ptx", "kernels-*.json"))):
    run = os.path.basename(path)[len("kernels-"):-len(".json")]
    with open(path) as f:
        check = json.load(f)
    for arch in check["architectures"]:
        if arch not in architectures:
            architectures.append(arch)
    for k in check["kernels"]:
        record = kernels.setdefault((k["key"], k["architecture"]), dict(k, runs=[]))
        record["runs"].append(run)


def ptxas(ptx_file):
    """ptxas's verdict and allotment for one PTX file (None where it was not assembled)."""
    stem = os.path.join(out, "ptxas", ptx_file[:-len(".ptx")])
    if not os.path.exists(stem + ".status"):
        return None
    with open(stem + ".status") as f:
        status = f.read().strip()
    with open(stem + ".log") as f:
        log = f.read()
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, log)) else None
    return {
        "assembled": status == "ok",
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "stack_frame": number(r"(\d+) bytes stack frame"),
        "log": log if status != "ok" else None,
    }


def threads_per_cube(ptx_file):
    """The launch's cube size, from the PTX's exact launch bounds (`.reqntid x, y, z`)."""
    with open(os.path.join(out, "ptx", ptx_file)) as f:
        m = re.search(r"\.reqntid (\d+), (\d+), (\d+)", f.read())
    return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) if m else None


def occupancy(arch, threads, registers, shared):
    """Resident warps per multiprocessor over the part's most; None for an unlisted part."""
    if arch not in PARTS:
        return None
    sm_registers, sm_warps, sm_cubes, sm_shared, reserved = PARTS[arch]
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = (sm_registers // per_warp) // warps
    by_shared = sm_shared // (-(-shared // SHARED_UNIT) * SHARED_UNIT + reserved) if shared or reserved else sm_cubes
    cubes = min(sm_cubes, by_registers, by_shared, sm_warps // warps)
    return cubes * warps / sm_warps


def short(name):
    """The kernel's type without its crate path and type parameters."""
    depth, bare = 0, ""
    for c in name:
        depth += c == "<"
        if depth == 0:
            bare += c
        depth -= c == ">"
    parts = bare.split("::")
    return "::".join(parts[-2:]) if len(parts) > 1 else bare


rows = list(kernels.values())
for k in rows:
    file = k.get("ptx_file")
    k["ptxas"] = ptxas(file) if file else None
    k["threads_per_cube"] = threads_per_cube(file) if file else None
    p = k["ptxas"]
    if p and p["registers"] is not None and k["threads_per_cube"]:
        k["occupancy"] = occupancy(k["architecture"], k["threads_per_cube"], p["registers"],
                                   k["shared_memory_bytes"] or 0)
    else:
        k["occupancy"] = None

refused = [k for k in rows if k.get("error")]
rejected = [k for k in rows if k["ptxas"] is not None and not k["ptxas"]["assembled"]]

print()
print("| architecture | kernels | compiled (cubecl-llvm) | assembled (ptxas) | spilling | most registers |")
print("|---|---|---|---|---|---|")
for arch in architectures:
    of_arch = [k for k in rows if k["architecture"] == arch]
    compiled = [k for k in of_arch if not k.get("error")]
    assembled = [k for k in compiled if k["ptxas"] and k["ptxas"]["assembled"]]
    spilling = [k for k in assembled if (k["ptxas"]["spill_stores"] or 0) > 0]
    regs = [k["ptxas"]["registers"] or 0 for k in assembled]
    print(f"| {arch} | {len(of_arch)} | {len(compiled)} | {len(assembled)} | {len(spilling)} | "
          f"{max(regs) if regs else '–'} |")

if architectures:
    first = architectures[0]
    print(f"\nOn {first}, by kernel type:\n")
    print("| kernel | variants | threads per cube | registers (max) | spill stores, bytes (max) | "
          "shared memory, bytes (max) | occupancy (min) | runs |")
    print("|---|---|---|---|---|---|---|---|")
    by_name = {}
    for k in rows:
        if k["architecture"] == first:
            by_name.setdefault(short(k["name"]), []).append(k)
    for name in sorted(by_name):
        group = by_name[name]
        regs = [k["ptxas"]["registers"] for k in group if k["ptxas"] and k["ptxas"]["registers"] is not None]
        spills = [k["ptxas"]["spill_stores"] or 0 for k in group if k["ptxas"]]
        shared = [k["shared_memory_bytes"] for k in group if k.get("shared_memory_bytes") is not None]
        runs = sorted({r for k in group for r in k["runs"]})
        threads = sorted({k["threads_per_cube"] for k in group if k["threads_per_cube"]})
        occupancies = [k["occupancy"] for k in group if k["occupancy"] is not None]
        bad = sum(1 for k in group if k.get("error") or (k["ptxas"] and not k["ptxas"]["assembled"]))
        print(f"| {name}{f' (**{bad} failed**)' if bad else ''} | {len(group)} | "
              f"{', '.join(map(str, threads)) or '–'} | "
              f"{max(regs) if regs else '–'} | {max(spills) if spills else '–'} | "
              f"{max(shared) if shared else '–'} | "
              f"{f'{min(occupancies):.0%}' if occupancies else '–'} | {', '.join(runs)} |")

for k in refused:
    print(f"\nREFUSED by cubecl-llvm for {k['architecture']}: {k['name']}\n  {k['error']}")
for k in rejected:
    print(f"\nREJECTED by ptxas for {k['architecture']}: {k['name']} ({k['ptx_file']})\n" +
          "\n".join("  " + line for line in k["ptxas"]["log"].splitlines()[:20]))

with open(os.path.join(out, "report.json"), "w") as f:
    json.dump({"architectures": architectures, "kernels": rows}, f, indent=1)
if not rows:
    print("no kernel was seen")
    sys.exit(1)
sys.exit(1 if refused or rejected else 0)
