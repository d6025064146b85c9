#!/usr/bin/env python3
"""The table of scripts/ptx-check.sh: every distinct kernel the `hvq ptx-check` runs compiled,
whether burn's CUDA compiler (cubecl-llvm) and NVIDIA's ptxas took it, and what ptxas allotted
(registers per thread, spilled bytes, stack), with the shared memory its launch reserves and the
occupancy these allow on an H100/H200 (resident warps per multiprocessor out of 64, from the
registers, shared memory and threads per cube, as CUDA's occupancy calculator reckons for
compute capability 9.0): a kernel at low occupancy hides memory latency only with the work each
thread has in flight.

Usage: ptx_report.py OUT ARCH   (OUT as ptx-check.sh fills it). Writes OUT/report.json.
Exit status 1 when a kernel was refused by either compiler or no kernel was seen."""

import glob
import json
import os
import re
import sys

out, arch = sys.argv[1], sys.argv[2]
kernels = {}  # key -> record, in first-seen order
for path in sorted(glob.glob(os.path.join(out, "ptx", "kernels-*.json"))):
    run = os.path.basename(path)[len("kernels-"):-len(".json")]
    with open(path) as f:
        check = json.load(f)
    for k in check["kernels"]:
        record = kernels.setdefault(k["key"], dict(k, runs=[]))
        record["runs"].append(run)


def ptxas(key):
    """ptxas's verdict and allotment for one PTX file (None where it was not assembled)."""
    status_file = os.path.join(out, "ptxas", key + ".status")
    if not os.path.exists(status_file):
        return None
    with open(status_file) as f:
        status = f.read().strip()
    with open(os.path.join(out, "ptxas", key + ".log")) as f:
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


# Compute capability 9.0 (H100, H200): per multiprocessor.
SM_REGISTERS, SM_WARPS, SM_CUBES, SM_SHARED = 65536, 64, 32, 233472
REGISTER_UNIT, SHARED_UNIT, SHARED_RESERVED = 256, 128, 1024


def threads_per_cube(key):
    """The launch's cube size, from the PTX's exact launch bounds (`.reqntid x, y, z`)."""
    with open(os.path.join(out, "ptx", key + ".ptx")) as f:
        m = re.search(r"\.reqntid (\d+), (\d+), (\d+)", f.read())
    return int(m.group(1)) * int(m.group(2)) * int(m.group(3)) if m else None


def occupancy(threads, registers, shared):
    """Resident warps per multiprocessor over its 64."""
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // REGISTER_UNIT) * REGISTER_UNIT
    by_registers = (SM_REGISTERS // per_warp) // warps
    by_shared = SM_SHARED // (-(-shared // SHARED_UNIT) * SHARED_UNIT + SHARED_RESERVED)
    cubes = min(SM_CUBES, by_registers, by_shared, SM_WARPS // warps)
    return cubes * warps / SM_WARPS


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


rows = []
for key, k in kernels.items():
    k["ptxas"] = ptxas(key) if k.get("ptx_file") else None
    k["threads_per_cube"] = threads_per_cube(key) if k.get("ptx_file") else None
    p = k["ptxas"]
    if p and p["registers"] is not None and k["threads_per_cube"]:
        k["occupancy"] = occupancy(k["threads_per_cube"], p["registers"], k["shared_memory_bytes"] or 0)
    else:
        k["occupancy"] = None
    rows.append(k)

refused = [k for k in rows if k.get("error")]
rejected = [k for k in rows if k["ptxas"] is not None and not k["ptxas"]["assembled"]]
spilling = [k for k in rows if k["ptxas"] and (k["ptxas"]["spill_stores"] or 0) > 0]

print(f"\n{len(rows)} distinct kernels for {arch}: {len(rows) - len(refused)} compiled by "
      f"cubecl-llvm, {len(rows) - len(refused) - len(rejected)} assembled by ptxas, "
      f"{len(spilling)} spilling registers")
print("| kernel | variants | threads per cube | registers (max) | spill stores, bytes (max) | "
      "shared memory, bytes (max) | occupancy (min) | runs |")
print("|---|---|---|---|---|---|---|---|")
by_name = {}
for k in rows:
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
    print(f"\nREFUSED by cubecl-llvm: {k['name']}\n  {k['error']}")
for k in rejected:
    print(f"\nREJECTED by ptxas: {k['name']} ({k['key']}.ptx)\n" +
          "\n".join("  " + line for line in k["ptxas"]["log"].splitlines()[:20]))

with open(os.path.join(out, "report.json"), "w") as f:
    json.dump({"architecture": arch, "kernels": rows}, f, indent=1)
if not rows:
    print("no kernel was seen")
    sys.exit(1)
sys.exit(1 if refused or rejected else 0)
