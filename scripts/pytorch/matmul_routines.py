"""The table of gpu-bench.sh --matmul-routines: one `hvq bench` report per routine for the
products no tensor core takes (HVQ_GPU_MATMUL), side by side.

Usage: python3 scripts/pytorch/matmul_routines.py DIR [DEFAULT.json]
  DIR holds hvq-<routine>-<config>.json; DEFAULT.json, the same binary's run on its default
  routine (auto), is the first row when given and readable.
Standard library only.
"""

import json
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1])
    reports = sorted(folder.glob("hvq-*.json"))
    if len(sys.argv) > 2 and Path(sys.argv[2]).is_file():
        reports.insert(0, Path(sys.argv[2]))
    rows = []
    for f in reports:
        r = json.loads(f.read_text())
        stage = {s["stage"]: s["median_ms"] for s in r["stages"]}
        step = (r.get("train_step_cached") or {}).get("median_ms")
        rows.append(
            (
                r.get("gpu_matmul") or f.stem,
                r["end_to_end"]["median_ms"],
                stage.get("backbone"),
                stage.get("encoder"),
                stage.get("decoder"),
                step,
            )
        )
    if not rows:
        print(f"no reports in {folder}")
        return
    print("| routine (HVQ_GPU_MATMUL) | end to end ms | backbone | encoder | decoder | train step ms |")
    print("|---|---|---|---|---|---|")
    for routine, *values in rows:
        cells = ["–" if v is None else f"{v:.1f}" for v in values]
        print(f"| {routine} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
