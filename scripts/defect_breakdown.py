"""Image AUROC per defect kind and per size class of a synthetic defect set (`hvq synth-defects`),
from the per-image scores `hvq eval --json` writes: each subset's anomalous images against all
normal test images of the same class. Standard library only.

    python3 scripts/defect_breakdown.py metrics.json [SET_DIR]

Sizes come from SET_DIR/<class>/synthetic.json when given, else from the file index (the generator
cycles small, medium, large).
"""
import json
import os
import sys


def auroc(pos, neg):
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main():
    metrics = json.load(open(sys.argv[1]))
    set_dir = sys.argv[2] if len(sys.argv) > 2 else None
    images = metrics["images"]
    classes = sorted({i["class"] for i in images})
    size_of = {}
    for c in classes:
        manifest = set_dir and os.path.join(set_dir, c, "synthetic.json")
        if manifest and os.path.isfile(manifest):
            for d in json.load(open(manifest))["defects"]:
                size_of[f"{c}/{d['image']}"] = d["size"]
    kinds = sorted({i["id"].split("/")[-2] for i in images if i["anomalous"]},
                   key=lambda k: ["scratch", "hole", "stain", "blur", "foreign"].index(k)
                   if k in ["scratch", "hole", "stain", "blur", "foreign"] else 99)
    cycle = ["small", "medium", "large"]

    def size(image):
        return size_of.get(image["id"]) or cycle[int(image["id"].split("/")[-1][:3]) % 3]

    subsets = [(k, lambda i, k=k: i["id"].split("/")[-2] == k) for k in kinds]
    subsets += [(s, lambda i, s=s: size(i) == s) for s in cycle]
    print("| anomalies | " + " | ".join(classes) + " | mean |")
    print("|---" * (len(classes) + 2) + "|")
    for name, keep in subsets:
        row = []
        for c in classes:
            normal = [i["score"] for i in images if i["class"] == c and not i["anomalous"]]
            anomalous = [i["score"] for i in images if i["class"] == c and i["anomalous"] and keep(i)]
            row.append(auroc(anomalous, normal) if anomalous and normal else float("nan"))
        print(f"| {name} | " + " | ".join(f"{a:.3f}" for a in row) + f" | {sum(row) / len(row):.3f} |")


if __name__ == "__main__":
    main()
