"""The table of gpu-bench.sh --attention-ab: hvq's default run (its own attention kernels) beside
the runs with burn's flash kernel at inference (HVQ_GPU_ATTENTION=flash) and burn's composed
operations in training (HVQ_TRAIN_ATTENTION=composed).

Usage: python3 scripts/pytorch/attention_ab.py DEFAULT.json ALTERNATIVE.json...
Standard library only.
"""

import json
import sys
from pathlib import Path


def label(report: dict, path: Path) -> str:
    if path.stem.startswith("HVQ_GPU_ATTENTION"):
        return "inference attention: burn flash"
    if path.stem.startswith("HVQ_TRAIN_ATTENTION"):
        return "training attention: burn composed"
    return (
        f"default (inference {report.get('inference_attention') or '?'}, "
        f"training {report.get('train_attention') or '?'})"
    )


def main() -> None:
    rows = []
    for name in sys.argv[1:]:
        path = Path(name)
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            rows.append((f"{path.name} (missing)", None, None, None, None))
            continue
        stage = {s["stage"]: s["median_ms"] for s in r["stages"]}
        step = (r.get("train_step_cached") or {}).get("median_ms")
        rows.append(
            (
                label(r, path),
                r["end_to_end"]["median_ms"],
                stage.get("encoder"),
                stage.get("decoder"),
                step,
            )
        )
    print("| run | end to end ms | encoder | decoder | train step ms |")
    print("|---|---|---|---|---|")
    for run, *values in rows:
        cells = ["–" if v is None else f"{v:.1f}" for v in values]
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
