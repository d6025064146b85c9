#!/usr/bin/env python3
"""Table of `hvq eval` reports at several precisions against the f32 one (standard library only).

Reads DIR/eval-<precision>.json (and eval-<precision>.seconds), prints per precision: mean image
AUROC and each class's, the images' score changes relative to their f32 scores (median, 99th
percentile, largest), the images whose verdict at the model's threshold (--config: its
config.json's calibration) differs from f32's, and the eval's wall time.
Usage: precision_effect.py DIR [--config MODEL/config.json]
"""
import argparse
import json
from pathlib import Path


def quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))] if v else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--config")
    a = ap.parse_args()
    d = Path(a.dir)
    threshold = None
    if a.config and Path(a.config).exists():
        threshold = (json.loads(Path(a.config).read_text()).get("calibration") or {}).get("threshold")
    runs = {}
    for p in sorted(d.glob("eval-*.json")):
        runs[p.stem[len("eval-"):]] = json.loads(p.read_text())
    if "f32" not in runs:
        raise SystemExit(f"precision_effect.py: no eval-f32.json in {d}")
    order = ["f32"] + [p for p in ("tf32", "bf16", "f16") if p in runs]
    ref = {i["id"]: i["score"] for i in runs["f32"]["images"]}
    classes = sorted(runs["f32"]["classes"])
    head = ["precision", "mean AUROC"] + [f"{c} AUROC" for c in classes] + [
        "score Δ/score median", "p99", "max", f"verdicts changed (threshold {threshold})", "eval s"]
    rows = []
    for p in order:
        r = runs[p]
        rel = [abs(i["score"] - ref[i["id"]]) / abs(ref[i["id"]]) for i in r["images"] if ref.get(i["id"])]
        flips = "—" if threshold is None else sum(
            (i["score"] > threshold) != (ref[i["id"]] > threshold) for i in r["images"] if i["id"] in ref)
        sec = d / f"eval-{p}.seconds"
        rows.append([p, f"{r['mean']['image_auroc']:.4f}"]
                    + [f"{r['classes'][c]['image_auroc']:.4f}" for c in classes]
                    + [f"{quantile(rel, 0.5):.1e}", f"{quantile(rel, 0.99):.1e}", f"{max(rel):.1e}",
                       f"{flips} of {len(r['images'])}" if flips != "—" else flips,
                       f"{float(sec.read_text()):.0f}" if sec.exists() else "—"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    env = d / "environment.txt"
    if env.exists():
        print(env.read_text().strip() + "\n")
    print("\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows]))


if __name__ == "__main__":
    main()
