#!/usr/bin/env python3
"""How much arithmetic a training step is, and how fast this CPU multiplies matrices.

Counts the floating-point operations of one inference batch (backbone, network, map, score) and of
one training step of the official configuration on cached
features (forward with the per-sample sequential EMA, loss, backward; the same step bench_torch.py
times) with torch's FlopCounterMode, split by operator, and times torch's own sgemm (MKL) on large
square matrices at the given thread count. Together they bound how fast any f32 implementation of
the step can be on this machine: step GFLOP / best sgemm GFLOP/s.

Usage: step_flops.py [--batch 8] [--threads 2] [--gemm-size 2048] [--json FILE]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hvq_torch as H  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--gemm-runs", type=int, default=10)
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    det = H.official_random()
    H.prepare(det)
    net = det.net
    net.invalidate()
    for p in net.parameters():
        p.requires_grad_(True)
    hcfg = det.hcfg
    classes = torch.tensor([i % hcfg.num_classes for i in range(a.batch)])
    feat = torch.randn(a.batch, hcfg.feature_channels, hcfg.feature_size, hcfg.feature_size)

    # Inference of the same configuration (backbone taps, network, map and score), for the same bound.
    det.eval()
    size = det.bcfg.input_size
    with torch.no_grad(), FlopCounterMode(display=False) as infer_counter:
        det(torch.randn(a.batch, 3, size, size), classes)
    inference = infer_counter.get_total_flops()
    net.train()  # the training step below: sequential EMA, dropout as configured

    counter = FlopCounterMode(display=False)
    with counter:
        out = net.train_loss(feat, classes)
        forward = counter.get_total_flops()
        out["total"].backward()
    total = counter.get_total_flops()
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}

    n = a.gemm_size
    x, y = torch.randn(n, n), torch.randn(n, n)
    times = []
    for i in range(a.gemm_runs + 2):
        t0 = time.perf_counter()
        torch.mm(x, y)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    gemm_flops = 2 * n**3
    best = gemm_flops / min(times) / 1e9
    median = gemm_flops / sorted(times)[len(times) // 2] / 1e9

    report = {
        "config": "official",
        "batch": a.batch,
        "threads": a.threads,
        "torch": torch.__version__,
        "step_gflop": total / 1e9,
        "forward_gflop": forward / 1e9,
        "backward_gflop": (total - forward) / 1e9,
        "step_gflop_by_op": {k: v / 1e9 for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
        "inference_gflop": inference / 1e9,
        "inference_ms_at_best_sgemm": inference / 1e9 / best * 1e3,
        "sgemm_size": n,
        "sgemm_gflops_best": best,
        "sgemm_gflops_median": median,
        "step_ms_at_best_sgemm": total / 1e9 / best * 1e3,
    }
    print(f"training step, official config, batch {a.batch}: {report['step_gflop']:.1f} GFLOP "
          f"(forward {report['forward_gflop']:.1f}, backward {report['backward_gflop']:.1f})")
    for k, v in report["step_gflop_by_op"].items():
        print(f"  {k:<40} {v:8.2f} GFLOP")
    print(f"torch sgemm {n}x{n}x{n}, {a.threads} threads: best {best:.0f} GFLOP/s, median {median:.0f}")
    print(f"=> the step's arithmetic alone at the best sgemm rate: {report['step_ms_at_best_sgemm']:.0f} ms")
    print(f"inference (backbone, network, map, score), batch {a.batch}: {report['inference_gflop']:.1f} GFLOP "
          f"=> {report['inference_ms_at_best_sgemm']:.0f} ms at the best sgemm rate")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
