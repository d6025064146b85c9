"""The tables of gpu-bench.sh's A/B runs: hvq's default run beside runs of the same binary with
start-up variables changed. The alternative is the file name's stem up to its first `-` (as
gpu-bench.sh names them):
  --attention-ab: both attentions on hvq's kernels (`attention_hvq`: HVQ_GPU_ATTENTION=split,
                  HVQ_TRAIN_ATTENTION=fused) and on burn's (`attention_burn`: flash at
                  inference, composed operations in training);
  --compiler-ab:  the kernels compiled to SPIR-V by CubeCL itself (HVQ_WGPU_COMPILER=spirv)
                  instead of the default's WGSL, which wgpu's naga translates;
  --matmul-routines: one routine for every product no tensor core takes (HVQ_GPU_MATMUL=simple,
                  ...; the report names it) instead of the default's `auto`.

Usage: python3 scripts/pytorch/ab_table.py DEFAULT.json ALTERNATIVE.json...
Standard library only.
"""

import json
import sys
from pathlib import Path

ALTERNATIVES = {
    "attention_hvq": "attention: hvq's kernels (split, fused)",
    "attention_burn": "attention: burn's (flash, composed)",
    "HVQ_WGPU_COMPILER": "kernels compiled to SPIR-V (CubeCL)",
}


def label(report: dict, path: Path) -> str:
    variable = path.stem.split("-", 1)[0]
    if variable == "HVQ_GPU_MATMUL":
        return f"products: {report.get('gpu_matmul') or path.stem.split('-')[1]}"
    if variable in ALTERNATIVES:
        return ALTERNATIVES[variable]
    return (
        f"default (inference {report.get('inference_attention') or '?'}, "
        f"training {report.get('train_attention') or '?'}, "
        f"kernels {report.get('kernel_compiler') or '?'}, "
        f"products {report.get('gpu_matmul') or '?'})"
    )


def median(r: dict, key: str):
    return (r.get(key) or {}).get("median_ms")


def main() -> None:
    rows = []
    for name in sys.argv[1:]:
        path = Path(name)
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            rows.append((f"{path.name} (missing)",) + (None,) * 7)
            continue
        stage = {s["stage"]: s["median_ms"] for s in r["stages"]}
        rows.append(
            (
                label(r, path),
                median(r, "end_to_end"),
                median(r, "end_to_end_queued"),
                stage.get("backbone"),
                stage.get("encoder"),
                stage.get("decoder"),
                median(r, "train_step_cached"),
                r.get("operation_host_us"),
            )
        )
    print(
        "| run | end to end ms | of it host queued | backbone | encoder | decoder "
        "| train step ms | host µs/op |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run, *values in rows:
        cells = ["–" if v is None else f"{v:.1f}" for v in values]
        print(f"| {run} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
