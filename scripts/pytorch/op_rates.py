#!/usr/bin/env python3
"""PyTorch's side of `cargo run --release -p core --example op_rates`: the official network's
linear layers at the training step's shapes (batch 8, 196 tokens; forward, input gradient,
weight gradient, in GFLOP/s) and an add of two [8, 196, 512] tensors, medians of 12 calls.

Usage: op_rates.py [--threads N]
"""
import argparse
import os
import time

import torch


def median(f):
    for _ in range(3):
        f()
    times = []
    for _ in range(12):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = 8 * 196
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    print("linear layers, [8, 196, in] -> out, GFLOP/s (forward / input gradient / weight gradient)")
    for d_in, d_out in [(256, 512), (256, 256), (256, 1024), (1024, 256), (512, 1024), (512, 512), (1024, 512)]:
        x = torch.randn(rows, d_in)
        grad = torch.randn(rows, d_out)
        w = torch.randn(d_out, d_in)
        flops = 2 * rows * d_in * d_out
        fwd = median(lambda: torch.nn.functional.linear(x, w))
        xg = median(lambda: grad @ w)
        wg = median(lambda: grad.t() @ x)
        print(f"{d_in:>5} -> {d_out:<5} {flops / fwd / 1e9:>6.0f} {flops / xg / 1e9:>6.0f} {flops / wg / 1e9:>6.0f}")
    a_ = torch.randn(8, 196, 512)
    b_ = torch.randn(8, 196, 512)
    print(f"add of two [8, 196, 512]: {median(lambda: a_ + b_) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
