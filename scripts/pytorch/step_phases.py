#!/usr/bin/env python3
"""One cached-feature training step of the PyTorch reference split into its phases, the way
`cargo run --release -p core --example profile_network -- train N official` splits hvq's:
forward + objective, backward, optimiser (clip_grad_norm_ + AdamW). Official configuration, random
init, random features, a different class per sample, no dropout (hvq_torch has none), medians.

Also times the training forward's three stages (encoder, quantisation with the per-sample EMA,
decoder) as the model runs them.

Usage: step_phases.py [--iterations 6] [--batch 8] [--threads N]
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hvq_torch as H  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    det = H.official_random()
    H.prepare(det)
    net, hcfg = det.net, det.hcfg
    classes = torch.tensor([i % hcfg.num_classes for i in range(a.batch)])
    tnet, params, opt = H.for_training(net)
    shape = (a.batch, hcfg.feature_channels, hcfg.feature_size, hcfg.feature_size)
    phases = {"forward + objective": [], "backward": [], "AdamW": [], "step": []}
    stages = {"encoder": [], "vq": [], "decoder": []}
    for it in range(a.warmup + a.iterations):
        feature = torch.randn(shape)
        t0 = time.perf_counter()
        out = tnet.train_loss(feature, classes)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out["total"].backward()
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()
        t3 = time.perf_counter()
        # The forward's stages, on their own (graph recorded, then dropped).
        tnet.invalidate()
        s0 = time.perf_counter()
        src, pos, hidden = tnet.encode(feature)
        s1 = time.perf_counter()
        levels, _ = tnet.quantize(src, hidden, classes, train=True)
        tnet.invalidate()
        s2 = time.perf_counter()
        tnet.decode(levels, pos, classes, feature.shape)
        s3 = time.perf_counter()
        if it >= a.warmup:
            for name, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                phases[name].append(v * 1e3)
            for name, v in zip(stages, (s1 - s0, s2 - s1, s3 - s2)):
                stages[name].append(v * 1e3)
    print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, "
          f"{sum(p.numel() for p in params)} trainable values")
    for name, v in {**phases, **stages}.items():
        print(f"{name:>24}: median {statistics.median(v):.1f} ms")


if __name__ == "__main__":
    main()
