#!/usr/bin/env python3
"""Writes the reference values that core/tests/metrics.rs checks hvq::eval against.

Binary metrics come from scikit-learn (roc_auc_score, average_precision_score,
precision_recall_curve); AUPRO from a numpy/scipy re-implementation of the MVTec AD evaluation
code (pro_curve_util.compute_pro + generic_util.trapezoid), since scikit-learn has no AUPRO.

Run once, commit the JSON; the Rust tests need no Python. Set-up:

    python3 -m venv /tmp/skl && /tmp/skl/bin/pip install scikit-learn scipy numpy
    /tmp/skl/bin/python scripts/make_metric_fixtures.py

Scores are stored as decimal numbers (few digits, to keep the files small); both sides read them
as float64 and cast to float32, and the references are computed on those float32 values, so
Python and Rust rank exactly the same numbers.
"""

import json
import pathlib

import numpy as np
import scipy
import sklearn
from scipy.ndimage import label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

OUT = pathlib.Path(__file__).resolve().parent.parent / "core" / "tests" / "fixtures" / "metrics"


def as_f32(values):
    """The float32 scores both sides use: decimal → float64 → float32."""
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def f1max(y, s):
    """Best 2PR/(P+R) over precision_recall_curve's thresholds (0 where P+R = 0)."""
    p, r, t = precision_recall_curve(y, s)
    p, r = p[:-1], r[:-1]  # the final (P=1, R=0) point has no threshold
    denom = p + r
    f1 = np.where(denom > 0, 2 * p * r / np.where(denom > 0, denom, 1), 0.0)
    i = int(np.argmax(f1))  # first maximum = lowest threshold, thresholds ascend
    return float(f1[i]), float(t[i])


def binary_case(name, scores, labels):
    """One binary case: inputs plus sklearn's values (null where we define the metric as None)."""
    scores = [float(v) for v in scores]
    labels = [int(v) for v in labels]
    s, y = as_f32(scores), np.asarray(labels)
    both = 0 < y.sum() < len(y)
    has_pos = y.sum() > 0
    expected = {
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "average_precision": float(average_precision_score(y, s)) if has_pos else None,
        "f1_max": None,
        "f1_threshold": None,
    }
    if has_pos:
        expected["f1_max"], expected["f1_threshold"] = f1max(y, s)
    return {"name": name, "scores": scores, "labels": labels, **expected}


def binary_cases(rng):
    cases = []
    n = 20
    y = rng.random(n) < 0.4
    cases.append(binary_case("random_small", np.round(rng.normal(size=n) + y, 6), y))
    n = 1000
    y = rng.random(n) < 0.3
    cases.append(binary_case("random_1000", np.round(rng.normal(size=n) * 3 + 2 * y, 5), y))
    # Exact ties everywhere: scores rounded to one decimal.
    n = 600
    y = rng.random(n) < 0.5
    cases.append(binary_case("ties_one_decimal", np.round(rng.random(n) * 0.7 + 0.3 * y, 1), y))
    cases.append(binary_case("all_equal", [0.3] * 50, rng.random(50) < 0.4))
    s = np.round(rng.random(40), 4)
    cases.append(binary_case("separated", s, s > 0.5))
    cases.append(binary_case("inverted", s, s < 0.5))
    cases.append(binary_case("pair_tie", [0.5, 0.5], [0, 1]))
    cases.append(binary_case("three", [0.2, 0.9, 0.4], [1, 0, 1]))
    cases.append(binary_case("negative_scores", [-2.5, -0.0, 0.0, -1.0, 3.0, -7.25], [0, 1, 0, 1, 1, 0]))
    cases.append(binary_case("all_positive", [0.1, 0.4, 0.4, 0.9], [1, 1, 1, 1]))
    cases.append(binary_case("all_negative", [0.1, 0.4, 0.9], [0, 0, 0]))
    n = 10000
    y = rng.random(n) < 0.1
    cases.append(binary_case("large_10000", np.round(rng.beta(2, 5, size=n) + 0.25 * y, 3), y))
    return cases


def mvtec_pro_curve(maps, masks):
    """compute_pro of the MVTec AD evaluation code, FPRs kept in float64 (the original casts
    them to float32 only to save memory)."""
    structure = np.ones((3, 3), dtype=int)  # 8-connectivity
    fp_changes, pro_changes = [], []
    num_ok, num_regions = 0, 0
    for gt in masks:
        labeled, n = label(gt, structure)
        num_regions += n
        ok = labeled == 0
        num_ok += int(ok.sum())
        fp = ok.astype(np.float64)
        pro = np.zeros(gt.shape, dtype=np.float64)
        for k in range(n):
            region = labeled == (k + 1)
            pro[region] = 1.0 / region.sum()
        fp_changes.append(fp)
        pro_changes.append(pro)
    scores = np.asarray(maps).ravel()
    order = np.argsort(scores, kind="stable")[::-1]
    scores = scores[order]
    fprs = np.cumsum(np.asarray(fp_changes).ravel()[order]) / num_ok
    pros = np.cumsum(np.asarray(pro_changes).ravel()[order]) / num_regions
    keep = np.append(np.diff(scores) != 0, True)  # one point per distinct score
    fprs = np.clip(fprs[keep], None, 1.0)
    pros = np.clip(pros[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0])), num_regions


def mvtec_trapezoid(x, y, x_max):
    """generic_util.trapezoid of the MVTec AD code: cut at x_max with linear interpolation."""
    from bisect import bisect

    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


def blob_masks(rng, count, size):
    """Masks with 1-3 blobs (discs and rectangles) each; the first is left defect-free, one gets
    two squares touching only at a corner (one region with 8-connectivity, two with 4)."""
    yy, xx = np.mgrid[0:size, 0:size]
    masks = []
    for i in range(count):
        m = np.zeros((size, size), dtype=bool)
        if i == 1:
            m[4:9, 4:9] = True
            m[9:13, 9:13] = True
        elif i > 0:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.integers(3, size - 3, size=2)
                if rng.random() < 0.5:
                    r = rng.uniform(1.5, 5)
                    m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                else:
                    h, w = rng.integers(1, 6, size=2)
                    m[cy : cy + h, cx : cx + w] = True
        masks.append(m)
    return masks


def pro_case(name, rng, count, size, decimals, limits):
    masks = blob_masks(rng, count, size)
    maps = []
    for m in masks:
        noise = rng.normal(0.3, 0.15, size=(size, size))
        signal = 0.35 * m + 0.15 * rng.random((size, size)) * m
        maps.append(np.round(noise + signal, decimals))
    maps32 = [as_f32(mp) for mp in maps]
    x, y, regions = mvtec_pro_curve(maps32, masks)
    return {
        "name": name,
        "width": size,
        "height": size,
        "maps": [[float(v) for v in mp.ravel()] for mp in maps],
        "masks": [[int(v) for v in m.ravel()] for m in masks],
        "regions": [int(label(m, np.ones((3, 3), dtype=int))[1]) for m in masks],
        "regions_total": regions,
        "aupro": {str(lim): mvtec_trapezoid(x, y, lim) / lim for lim in limits},
    }


def main():
    rng = np.random.default_rng(20240521)
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"sklearn": sklearn.__version__, "scipy": scipy.__version__, "numpy": np.__version__}
    binary = {"generated_by": "scripts/make_metric_fixtures.py", "versions": versions, "cases": binary_cases(rng)}
    limits = [0.3, 0.05, 1.0]
    pro = {
        "generated_by": "scripts/make_metric_fixtures.py",
        "versions": versions,
        "cases": [
            pro_case("blobs_6x32x32", rng, 6, 32, 3, limits),
            pro_case("ties_4x16x16", rng, 4, 16, 1, limits),
        ],
    }
    for file, data in [("binary.json", binary), ("aupro.json", pro)]:
        path = OUT / file
        path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
