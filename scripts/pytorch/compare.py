#!/usr/bin/env python3
"""Side-by-side table of `hvq bench` and `bench_torch.py` reports (standard library only).

Reads DIR/hvq-<device>-<config>.json and DIR/torch-<device>-<config>.json and prints, per config,
the median end-to-end milliseconds per image of every run and its ratio to the PyTorch reference
run (`--ref`, default cuda; hvq/PyTorch > 1 means hvq is slower), then the per-stage medians and
the training steps, and where the runs profiled their kernels (`--kernels`) the launches and
kernel time per stage side by side. A device with a precision suffix (`cuda_tf32`: scripts/gpu-bench.sh
--precisions) is compared with PyTorch's run at the same precision (`torch-cuda_tf32-…`), every
other run with the plain reference (strict fp32). Also writes DIR/summary.md.
Usage: compare.py DIR [--ref cuda|cpu] [--gpu NAME] [--date TEXT]
"""
import argparse
import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def per_image(r):
    return r["end_to_end"]["median_ms"] / r["batch"]


def fmt(v, digits=1):
    return "—" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def train_ms(r, key="train_step_cached"):
    s = r.get(key) if r else None
    return s["median_ms"] if s else None


def train_batch(r):
    return r.get("train_batch", r["batch"]) if r else None


def precision_of(dev):
    """`cuda_tf32` -> `tf32`; a device without a suffix ran at f32."""
    return dev.split("_", 1)[1] if "_" in dev else "f32"


def reference(runs, ref_dev, dev, cfg):
    """PyTorch's run on the reference device at this run's precision, or None."""
    p = precision_of(dev)
    return runs.get(("torch", ref_dev if p == "f32" else f"{ref_dev}_{p}", cfg))


def table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def kernel_tables(runs, kruns, top=3):
    """Per stage, each run's kernel launches and summed kernel time (`--kernels` of hvq bench and
    bench_torch.py), then each run's longest kernels per stage."""
    stages = []
    for k in kruns:
        for s in runs[k]["kernels"]["stages"]:
            if s["stage"] not in stages:
                stages.append(s["stage"])
    label = lambda k: f"{'hvq' if k[0] == 'hvq' else 'PyTorch'} {k[1]}"
    find = lambda k, st: next((s for s in runs[k]["kernels"]["stages"] if s["stage"] == st), None)
    rows = []
    for st in stages:
        row = [st]
        for k in kruns:
            s = find(k, st)
            row.append("—" if s is None else f"{s['launches']} / {s['kernel_ms']:.2f}")
        rows.append(row)
    timing = "; ".join(f"{label(k)}: {runs[k]['kernels'].get('timing', '?')}" for k in kruns)
    lines = [f"\nkernels of one profiled pass, launches / summed kernel ms ({timing}):",
             table(["stage"] + [label(k) for k in kruns], rows),
             f"\nlongest kernels per stage (top {top}):"]
    for st in stages:
        for k in kruns:
            s = find(k, st)
            if s and s["kernels"]:
                best = ", ".join(f"{x['name'][:50]} ×{x['launches']} {x['ms']:.2f} ms" for x in s["kernels"][:top])
                lines.append(f"- {st}, {label(k)}: {best}")
    copies = layout_copies(runs, [k for k in kruns if k[0] == "hvq"], stages, find)
    if copies:
        lines.append("\nhvq's layout copies (CubeCL's copy kernels, which make a strided or padded tensor "
                     "contiguous; on CUDA burn pads rows that are not a whole alignment, docs/gpu.md), "
                     "launches / ms per stage:")
        lines += copies
    return "\n".join(lines)


def layout_copies(runs, kruns, stages, find):
    """Per hvq run, the launches and kernel time of CubeCL's copy kernels (`CopyKernel`,
    `CopyKernelPack`, `CopyKernelPacked`, `CopyPerpendicular`) in each stage that has any."""
    out = []
    for k in kruns:
        parts = []
        for st in stages:
            s = find(k, st)
            hits = [x for x in (s or {}).get("kernels", []) if x["name"].lower().startswith(("copykernel", "copyperpendicular", "copy_kernel", "copy_perpendicular"))]
            if hits:
                parts.append(f"{st} {sum(x['launches'] for x in hits)} / {sum(x['ms'] for x in hits):.2f}")
        if parts:
            out.append(f"- hvq {k[1]}: " + "; ".join(parts))
    return out


def product_tables(runs, keys, top=12):
    """The `auto` routine's timings of each hvq run that has them (HVQ_GPU_MATMUL=auto: burn's
    SimpleUnit against hvq's tiled kernel in each of its block sizes, per kind of product, on the
    first batch or kept from an earlier run): totals, then the kinds with the most time at stake.
    Reads `tiled_us` (routine name -> µs) and the older reports' tiled64_us / tiled32_us /
    tiled128_us fields."""
    def tiled(t):
        if "tiled_us" in t:
            return t["tiled_us"]
        return {name: t[f"{name}_us"] for name in ("tiled64", "tiled32", "tiled128") if t.get(f"{name}_us") is not None}

    def gflops(t):
        lhs, rhs = t["lhs"], t["rhs"]
        batch = 1
        for x, y in zip(lhs[:-2], rhs[:-2]):
            batch *= max(x, y)
        us = t["burn_us"] if t["runs_on"] == "burn" else tiled(t).get(t["runs_on"])
        return None if not us else 2 * batch * lhs[-2] * lhs[-1] * rhs[-1] / (us * 1e3)

    out = []
    for k in keys:
        timings = runs[k].get("product_timings") or []
        if not timings:
            continue
        names = []
        for t in timings:
            names += [n for n in tiled(t) if n not in names]
        us = lambda t: [t["burn_us"]] + list(tiled(t).values())
        burn = sum(t["burn_us"] for t in timings)
        best = sum(min(us(t)) for t in timings)
        on_tiled = sum(1 for t in timings if t["runs_on"] != "burn")
        kept = sum(1 for t in timings if t.get("stored"))
        out.append(f"\nproducts timed by `auto` (hvq {k[1]}, µs per launch, one of each kind): {len(timings)} kinds, "
                   f"{on_tiled} on the tiled kernel; all on burn's {burn:.0f} µs, each on its fastest {best:.0f} µs"
                   + (f"; {kept} kept from an earlier run (HVQ_PRODUCT_CHOICES)" if kept else ""))
        rows = []
        for t in sorted(timings, key=lambda t: -max(us(t)))[:top]:
            # A kind timed with its layer's bias, activation and residual (hvq's `epilogue`).
            rows.append([f"{t['lhs']} · {t['rhs']}" + (" + epilogue" if t.get("epilogue") else ""), "x".join(map(str, t["lhs_strides"])) + " · " +
                         "x".join(map(str, t["rhs_strides"])), fmt(t["burn_us"])] +
                        [fmt(tiled(t).get(n)) for n in names] +
                        [fmt(gflops(t), 0), t["runs_on"] + (" (kept)" if t.get("stored") else "")])
        out.append(table(["operands", "strides", "burn µs"] + [f"{n} µs" for n in names] +
                         ["GFLOP/s (its choice)", "runs on"], rows))
    return "\n".join(out)


def attention_tables(runs, keys):
    """Inference attention's `auto` timings of each hvq run that has them (HVQ_GPU_ATTENTION=auto:
    hvq's split kernel against burn's flash kernel, per kind of attention, on the first batch or
    kept from an earlier run), and training attention's (`train_attention_table`)."""
    out = []
    for k in keys:
        timings = runs[k].get("attention_timings") or []
        if not timings:
            out.append(train_attention_table(runs[k], k))
            continue
        on_flash = sum(1 for t in timings if t["runs_on"] == "flash")
        kept = sum(1 for t in timings if t.get("stored"))
        out.append(f"\ninference attention timed by `auto` (hvq {k[1]}, µs per launch): {len(timings)} kinds, "
                   f"{on_flash} on burn's flash kernel, {len(timings) - on_flash} on hvq's split kernel"
                   + (f"; {kept} kept from an earlier run (HVQ_PRODUCT_CHOICES)" if kept else ""))
        rows = [[str(t["heads"]), f"{t['q']} · {t['k']}",
                 " · ".join("x".join(map(str, t[f"{x}_strides"])) for x in "qkv"),
                 fmt(t.get("split_us")), fmt(t.get("flash_us")),
                 t["runs_on"] + (" (kept)" if t.get("stored") else "")] for t in timings]
        out.append(table(["heads", "q · k", "strides q · k · v", "split µs", "flash µs", "runs on"], rows))
        out.append(train_attention_table(runs[k], k))
    return "\n".join(o for o in out if o)


def train_attention_table(run, k):
    """Training attention's `auto` timings of one hvq run (HVQ_TRAIN_ATTENTION=auto: the fused
    operation against the composed form, a forward and backward pass without dropout, per kind of
    training attention)."""
    timings = run.get("train_attention_timings") or []
    if not timings:
        return ""
    on_composed = sum(1 for t in timings if t["runs_on"] == "composed")
    kept = sum(1 for t in timings if t.get("stored"))
    letters = "qkv"

    def inputs(t):
        return " ".join("".join(letters[b] for b in range(i["blocks"][0], i["blocks"][1]))
                        + ("+pos" if i.get("offset") else "") for i in t["inputs"])
    rows = [[str(t["heads"]), str(t["inputs"][0]["x"]), inputs(t), fmt(t.get("fused_us")),
             fmt(t.get("composed_us")), t["runs_on"] + (" (kept)" if t.get("stored") else "")]
            for t in timings]
    head = (f"\ntraining attention timed by `auto` (hvq {k[1]}, µs per forward and backward pass): "
            f"{len(timings)} kinds, {on_composed} on the composed form, {len(timings) - on_composed} on the fused one"
            + (f"; {kept} kept from an earlier run (HVQ_PRODUCT_CHOICES)" if kept else ""))
    return head + "\n" + table(["heads", "tokens", "inputs", "fused µs", "composed µs", "runs on"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--ref", default="cuda", help="device of the PyTorch run the ratios refer to")
    ap.add_argument("--gpu", default="", help="GPU name for the heading")
    ap.add_argument("--date", default="", help="date for the heading")
    a = ap.parse_args()
    d = Path(a.dir)
    runs = {}
    for p in sorted(d.glob("*.json")):
        parts = p.stem.split("-", 2)
        if len(parts) == 3 and parts[0] in ("hvq", "torch"):
            r = load(p)
            if r:
                runs[(parts[0], parts[1], parts[2])] = r
    if not runs:
        sys.exit(f"compare.py: no hvq-*.json or torch-*.json reports in {d}")
    configs = sorted({k[2] for k in runs}, key=lambda c: (c != "official", c))
    out = []
    head = "# hvq vs PyTorch"
    if a.gpu:
        head += f" on {a.gpu}"
    if a.date:
        head += f", {a.date}"
    out.append(head)
    any_r = next(iter(runs.values()))
    out.append(f"\nmachine: {any_r.get('machine', '?')}")
    for (fw, dev, cfg), r in sorted(runs.items()):
        if fw == "hvq" and r.get("adapter"):
            compiler = r.get("kernel_compiler")
            out.append(
                f"hvq ({dev}, {cfg}): adapter {r['adapter']}"
                + (f", kernels compiled to {compiler}" if compiler else "")
            )
        if fw == "hvq" and r.get("debug_assertions"):
            out.append(f"hvq ({dev}, {cfg}): built with debug assertions (not --release: its host costs are not a release build's)")
        if fw == "hvq" and r.get("precision", "f32") != "f32":
            out.append(f"hvq ({dev}, {cfg}): precision {r['precision']}")
        if fw == "torch":
            out.append(f"PyTorch ({dev}): {r.get('framework', '?')}, {r.get('precision', '?')}, threads {r.get('threads', '?')}")
    out.append("\nRatio = hvq / PyTorch on the same config and precision (> 1: hvq slower). Median over the timed runs.")
    for cfg in configs:
        ref = runs.get(("torch", a.ref, cfg))
        rows = []
        order = sorted((k for k in runs if k[2] == cfg), key=lambda k: (k[0] != "hvq", k[1]))
        for fw, dev, _ in order:
            r = runs[(fw, dev, cfg)]
            rr = reference(runs, a.ref, dev, cfg)
            name = f"{'hvq' if fw == 'hvq' else 'PyTorch'} {dev}"
            tm = train_ms(r)
            rows.append([
                name, r["batch"], fmt(per_image(r), 2), fmt(r["images_per_second"]),
                fmt(ratio(per_image(r), per_image(rr) if rr else None), 2),
                f"{fmt(tm)} (b{train_batch(r)})" if tm is not None else "—",
                fmt(ratio(tm, train_ms(rr)), 2) if rr and train_batch(r) == train_batch(rr) else "—",
            ])
            # hvq's inference recorded once and replayed for each batch (`hvq bench` on a GPU).
            rep, check = r.get("end_to_end_replayed"), r.get("replay") or {}
            if fw == "hvq" and rep:
                img = rep["median_ms"] / r["batch"]
                rows.append([
                    f"{name}, replayed" + ("" if check.get("recorded") else " (not recorded: ran again)"),
                    r["batch"], fmt(img, 2), fmt(r["batch"] / (rep["median_ms"] / 1e3)),
                    fmt(ratio(img, per_image(rr) if rr else None), 2), "—", "—",
                ])
        out.append(f"\n## config `{cfg}`" + ("" if ref else f"  (no PyTorch {a.ref} run: no ratios)"))
        out.append(table(["run", "batch", "ms/image e2e", "images/s", f"ratio vs PyTorch {a.ref}",
                          "train step ms (cached)", "train ratio"], rows))
        stage_names = []
        for k in order:
            for s in runs[k]["stages"]:
                if s["stage"] not in stage_names:
                    stage_names.append(s["stage"])
        srows = []
        for st in stage_names + ["end to end"]:
            row = [st]
            for k in order:
                r = runs[k]
                s = r["end_to_end"] if st == "end to end" else next((x for x in r["stages"] if x["stage"] == st), None)
                row.append(fmt(s["median_ms"]) if s else "—")
            if ref:
                for k in order:
                    if k[0] == "hvq":
                        r, rr = runs[k], reference(runs, a.ref, k[1], cfg)
                        s = r["end_to_end"] if st == "end to end" else next((x for x in r["stages"] if x["stage"] == st), None)
                        rs = None if rr is None else (
                            rr["end_to_end"] if st == "end to end" else next((x for x in rr["stages"] if x["stage"] == st), None))
                        row.append(fmt(ratio(s["median_ms"] if s else None, rs["median_ms"] if rs else None), 2))
            srows.append(row)
        names = [f"{'hvq' if k[0] == 'hvq' else 'PyTorch'} {k[1]} ms" for k in order]
        if ref:
            names += [f"ratio {k[1]}" for k in order if k[0] == "hvq"]
        out.append("\nper stage (median ms per batch, synchronised after each stage):")
        out.append(table(["stage"] + names, srows))
        for k in order:
            up, pre = runs[k].get("preprocess_upload"), next(
                (x for x in runs[k]["stages"] if x["stage"] == "preprocess"), None)
            if up and pre:
                out.append(f"- hvq {k[1]}: of preprocess's {fmt(pre['median_ms'])} ms, the upload to the device and "
                           f"the wait for it {fmt(up['median_ms'])} ms (the rest: decode, resize, normalise on the host)")
        qrows = []
        for k in order:
            r = runs[k]
            for label, total, queued in (("end to end (ms)", "end_to_end", "end_to_end_queued"),
                                         ("end to end, replayed (ms)", "end_to_end_replayed",
                                          "end_to_end_replayed_queued"),
                                         ("train step, cached (ms)", "train_step_cached", "train_step_queued")):
                t, q = r.get(total), r.get(queued)
                if t and q:
                    qrows.append([f"{'hvq' if k[0] == 'hvq' else 'PyTorch'} {k[1]}", label, fmt(t["median_ms"]),
                                  fmt(q["median_ms"]), fmt(ratio(q["median_ms"], t["median_ms"]), 2)])
            if r.get("operation_host_us") is not None:
                qrows.append([f"{'hvq' if k[0] == 'hvq' else 'PyTorch'} {k[1]}", "one operation (µs)",
                              "—", fmt(r["operation_host_us"]), "—"])
        if qrows:
            out.append("\nhost's share (median time until all work is launched, before waiting for the device; "
                       "on CUDA a share near 1 means bound by the host's per-operation work, not by the kernels; "
                       "on wgpu a slow device shows in it too: cubecl waits for its previous submission after "
                       "512 queued tasks):")
            out.append(table(["run", "measure", "total", "host queued", "share"], qrows))
        for k in order:
            check = runs[k].get("replay")
            if k[0] == "hvq" and check:
                out.append(
                    f"- hvq {k[1]}, replayed: " + (
                        f"the pass recorded once"
                        + (f" in {check['record_ms']:.1f} ms" if check.get("record_ms") is not None else "")
                        + f", each batch replays it; image scores within "
                        f"{check.get('max_score_difference') or 0:.1e} of the pass run directly"
                        if check["recorded"] else
                        f"not recorded ({check.get('not_recorded')}), the pass ran again for each batch"))
        kruns = [k for k in order if runs[k].get("kernels")]
        if kruns:
            out.append(kernel_tables(runs, kruns))
        products = product_tables(runs, [k for k in order if k[0] == "hvq"])
        if products:
            out.append(products)
        attention = attention_tables(runs, [k for k in order if k[0] == "hvq"])
        if attention:
            out.append(attention)
    text = "\n".join(out)
    print(text)
    (d / "summary.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
