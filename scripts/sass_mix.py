#!/usr/bin/env python3
"""The machine code of hvq's kernels on an H100/H200, read without a GPU: for each kernel that
`scripts/ptx-check.sh` assembled for sm_90a, NVIDIA's disassembler (`nvdisasm`, from
`scripts/cuda-tools.sh`) lists the SASS instructions ptxas chose, and this prints, per kernel
variant, its main loop (the loop with the most floating-point instructions: a product's
multiply-add loop, an attention's key loop) and what that loop spends its instructions on:
the share that is floating-point arithmetic, the fused multiply-adds per shared-memory load
instruction, and the width of its shared and global loads (LDS.128 brings four floats in one
instruction). A loop that is mostly address arithmetic or narrow loads is slow on any GPU; one
that is mostly FFMA is bound by the arithmetic or by the memory it waits on, which only a GPU can
tell apart. Static counts per loop pass, not a timing.

Usage: python3 scripts/sass_mix.py OUT [--all] [--json FILE]
  OUT: a `scripts/ptx-check.sh --out` folder (its report.json and the cubins under ptxas/);
  --all: every kernel, burn's included (default: hvq's own, `hvq::` names).
Exit status 1 when a kernel's cubin is missing or disassembles to nothing.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import re
import subprocess
import sys

ARCH = "sm_90a"
# `/*0140*/  @!P0 FFMA R4, R5, R6, R4 ;` -> address, instruction
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
LABEL = re.compile(r"^(\.L_x_\d+):")
BRANCH = re.compile(r"\bBRA\s+`\((\.L_x_\d+)\)")
FLOAT_OPS = ("FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP", "MUFU")


def opcode(instruction):
    """`@!P0 LDS.U.128 R4, [R2]` -> `LDS.U.128` (predicate dropped)."""
    return re.sub(r"^@!?U?P[T\d]+\s+", "", instruction).split()[0]


def width(op):
    """A load's width in bits from its modifiers (`LDS.128`, `LDG.E.64.CONSTANT`), 32 when none."""
    for bits in ("128", "64"):
        if f".{bits}" in op:
            return int(bits)
    return 32


def disassemble(nvdisasm, cubin):
    text = subprocess.run([nvdisasm, "-c", cubin], check=True, capture_output=True,
                          text=True).stdout
    instructions, labels, pending = [], {}, []
    for line in text.splitlines():
        label = LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        m = INSTRUCTION.search(line)
        if m:
            address = int(m.group(1), 16)
            for name in pending:
                labels[name] = address
            pending = []
            instructions.append((address, m.group(2)))
    return instructions, labels


def loops(instructions, labels):
    """Each backward branch's span `[target, branch]` as the instructions in it; not the branch to
    itself that ends every kernel's code (padding after its exit)."""
    out = []
    for address, instruction in instructions:
        m = BRANCH.search(instruction)
        if m and labels.get(m.group(1), address) < address:
            start = labels[m.group(1)]
            out.append([i for a, i in instructions if start <= a <= address])
    return out


def mix(body):
    ops = [opcode(i) for i in body]
    base = collections.Counter(op.split(".")[0] for op in ops)
    floats = sum(base[o] for o in FLOAT_OPS)
    shared = collections.Counter(width(op) for op in ops if op.split(".")[0] == "LDS")
    glob = collections.Counter(width(op) for op in ops if op.split(".")[0] == "LDG")
    return {
        "instructions": len(ops),
        "float_ops": floats,
        "ffma": base["FFMA"],
        "shared_loads": {str(k): v for k, v in sorted(shared.items())},
        "global_loads": {str(k): v for k, v in sorted(glob.items())},
        "barriers": base["BAR"],
    }


def loads(counts):
    return " ".join(f"{n}×{bits}" for bits, n in counts.items()) or "–"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--all", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    # ptx-check.sh exports the toolkit tree it installed; run alone, install (or find) it here.
    tools = os.environ.get("CUDA_PATH") or subprocess.run(
        ["bash", "scripts/cuda-tools.sh"], check=True, capture_output=True,
        text=True).stdout.strip().splitlines()[-1]
    nvdisasm = os.path.join(tools, "bin", "nvdisasm")
    report = json.load(open(os.path.join(args.out, "report.json")))
    chosen = [k for k in report["kernels"]
              if k["architecture"] == ARCH and (args.all or k["name"].startswith("hvq::"))
              and k.get("ptxas", {}).get("assembled")]

    def listing(k):
        """`(kernel, instructions, labels, problem)`, one nvdisasm process per kernel."""
        cubin = os.path.join(args.out, "ptxas", k["ptx_file"].replace(".ptx", ".cubin"))
        if not os.path.exists(cubin):
            return k, None, None, f"no cubin at {cubin}"
        try:
            return (k, *disassemble(nvdisasm, cubin), None)
        except subprocess.CalledProcessError as e:
            return k, None, None, f"nvdisasm refused {cubin}: {e.stderr.strip()[:200]}"

    rows, problems = [], []
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        listings = list(pool.map(listing, chosen))
    for k, instructions, labels, problem in listings:
        if problem:
            problems.append(f"{k['name']} ({k['key']}): {problem}")
            continue
        if not instructions:
            problems.append(f"{k['name']} ({k['key']}): nvdisasm listed no instructions")
            continue
        spans = loops(instructions, labels)
        main_loop = max(spans, key=lambda b: (mix(b)["float_ops"], len(b)), default=None)
        rows.append({
            "name": k["name"],
            "key": k["key"],
            "registers": k["ptxas"]["registers"],
            "shared_memory_bytes": k.get("shared_memory_bytes"),
            "instructions": len(instructions),
            "loops": len(spans),
            "main_loop": mix(main_loop) if main_loop else None,
        })
    rows.sort(key=lambda r: (r["name"], r["key"]))
    print(f"SASS of {len(rows)} kernel variants on {ARCH} (nvdisasm; static counts per pass of "
          f"each main loop)")
    print("| kernel | variant | registers | shared bytes | instructions | main loop: instructions | "
          "floating-point | FFMA per shared load | shared loads (count×bits) | "
          "global loads | barriers |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        short = r["name"].split("::")[-1]
        m = r["main_loop"]
        if m is None:
            print(f"| {short} | {r['key']} | {r['registers']} | {r['shared_memory_bytes']} | "
                  f"{r['instructions']} | no loop | | | | | |")
            continue
        lds = sum(m["shared_loads"].values())
        per = f"{m['ffma'] / lds:.1f}" if lds else "–"
        print(f"| {short} | {r['key']} | {r['registers']} | {r['shared_memory_bytes']} | "
              f"{r['instructions']} | "
              f"{m['instructions']} | {m['float_ops'] / m['instructions']:.0%} | {per} | "
              f"{loads(m['shared_loads'])} | {loads(m['global_loads'])} | {m['barriers']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"architecture": ARCH, "kernels": rows}, f, indent=1)
    for p in problems:
        print(f"PROBLEM {p}")
    if problems or not rows:
        print("sass_mix: " + ("no kernels found" if not rows else f"{len(problems)} problem(s)"))
        sys.exit(1)


if __name__ == "__main__":
    main()
