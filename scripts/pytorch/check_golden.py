#!/usr/bin/env python3
"""Check hvq_torch.py (written from the spec) against the golden tensors of the official code.

Set A (backbone_b4): conv padding table, taps of blocks 1/5/9/21, feature_align.
Set B (hvq_small): encoder, every VQ level's indices (exact) / diffs / codes, decoder, rec, OT, maps,
                   image score, losses.
Set C (hvq_small_trainstep): sequential-EMA train forward (indices, EMA codebooks, rec, losses),
                   raw gradients, clip norm, one AdamW step.
Usage: check_golden.py [--golden DIR] [--threads N] [--device cpu|cuda]   (exit status 1 when a check fails)
"""
import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hvq_torch as H  # noqa: E402

ROWS = []
DEV = torch.device("cpu")
FAILED = []


def report(name, got, ref, tol, rel=False):
    got, ref = got.detach().double().cpu(), ref.double().cpu()
    if tuple(got.shape) != tuple(ref.shape):
        ROWS.append((name, "shape", f"{tuple(got.shape)} vs {tuple(ref.shape)}", "FAIL"))
        FAILED.append(name)
        return
    d = (got - ref).abs().max().item() if got.numel() else 0.0
    limit = tol * max(ref.abs().max().item(), 1e-30) if rel else tol
    ok = d <= limit
    ROWS.append((name, f"{d:.3g}", f"max|ref| {ref.abs().max().item():.3g}, tol {limit:.2g}", "ok" if ok else "FAIL"))
    if not ok:
        FAILED.append(name)


def report_idx(name, got, ref):
    n = int((got.cpu() != ref.cpu()).sum().item())
    ROWS.append((name, f"{n} differ", f"of {ref.numel()}", "ok" if n == 0 else "FAIL"))
    if n:
        FAILED.append(name)


def set_a(g):
    t = H.load_tensors(g / "backbone_b4.safetensors")
    manifest = json.loads((g / "backbone_b4.json").read_text())
    enc = H.prepare(H.EfficientNet(H.BackboneCfg.b4()))
    H.load_module(enc, {k[6:]: v for k, v in t.items() if k.startswith("state.")}, "set A")
    enc.to(DEV)
    # Every conv with k > 1 must have the manifest's zero padding.
    table = enc.conv_table()
    bad = [c["name"] for c in manifest["conv_table"]
           if c["kernel"][0] > 1 and tuple(table.get(c["name"], ())) != tuple(c["zero_pad_left_right_top_bottom"])]
    checked = sum(1 for c in manifest["conv_table"] if c["kernel"][0] > 1)
    ROWS.append(("A conv padding table", f"{len(bad)} differ", f"of {checked} k>1 convs", "ok" if not bad else "FAIL"))
    if bad:
        FAILED.append(f"padding {bad[:4]}")
    with torch.inference_mode():
        taps = enc(t["input.x"].to(DEV))
        feat = H.align(taps, 14)
    for tap, name in zip(taps, ["out.block1", "out.block5", "out.block9", "out.block21"]):
        report(f"A {name}", tap, t[name], 1e-4, rel=True)
    report("A feature_align", feat, t["feature_align"], 1e-4, rel=True)


def lite0():
    """EfficientNet-Lite0 with the shipped ImageNet weights against the reference tap statistics
    of docs/data-and-weights.md (synthetic input, (x - 127)/128 scaling, TF SAME padding)."""
    if not H.LITE0_WEIGHTS.is_file():
        ROWS.append(("L lite0 tap statistics", "skipped", f"{H.LITE0_WEIGHTS} missing", "ok"))
        return
    enc = H.prepare(H.EfficientNet(H.BackboneCfg.lite0()))
    H.load_module(enc, H.load_tensors(H.LITE0_WEIGHTS), "lite0")
    enc.to(DEV)
    c, hh, ww = torch.meshgrid(torch.arange(3), torch.arange(224), torch.arange(224), indexing="ij")
    x = (((7 * hh + 13 * ww + 29 * c) % 256).float() - 127) / 128
    ref = [(-0.74005, 8.60383), (-1.02792, 14.21168), (1.58851, 11.64939), (-0.63678, 6.66904)]
    with torch.inference_mode():
        taps = enc(x.unsqueeze(0).to(DEV))
    worst = 0.0
    for t, (m, s) in zip(taps, ref):
        worst = max(worst, abs(t.mean().item() - m) / abs(m), abs(t.std().item() - s) / s)
    ok = worst <= 1e-3
    ROWS.append(("L lite0 tap mean/std (4 taps)", f"{worst:.3g} rel", "vs data-and-weights.md, tol 1e-3", "ok" if ok else "FAIL"))
    if not ok:
        FAILED.append("lite0 taps")


def small_model(g):
    t = H.load_tensors(g / "hvq_small.safetensors")
    cfg = H.HvqCfg(feature_channels=272, embed_dim=64, heads=8, ffn_dim=256, num_classes=3, codes=32,
                   class_names=["0", "1", "2"])
    net = H.HVQ(cfg)
    H.load_module(net, {k[6:]: v for k, v in t.items() if k.startswith("state.")}, "set B")
    return net.to(DEV), t


def set_b(g):
    net, t = small_model(g)
    H.prepare(net)
    feat, labels = t["input.feature_align"].to(DEV), t["input.labels"].to(DEV)
    with torch.inference_mode():
        out = net.forward_eval(feat, labels)
        m14, m224, score = net.scores(feat, out, labels, 224)
        l2 = (out["rec"] - feat).pow(2).sum(1, keepdim=True).sqrt()
        ot = net.ot_score(out["inputs"][0], labels)
        feature_loss = torch.nn.functional.mse_loss(out["rec"], feat)
        latent = sum(l.diff.mean() for l in out["levels"])
    enc = torch.stack([out["src"]] + out["hidden"], 0)
    report("B enc.out (src, h1..h4)", enc, t["enc.out"], 1e-4)
    for lvl in range(5, 0, -1):
        L = out["levels"][lvl - 1]
        report_idx(f"B vq.l{lvl}.idx", L.idx, t[f"vq.l{lvl}.idx"])
        report(f"B vq.l{lvl}.diff", L.diff, t[f"vq.l{lvl}.diff"], 1e-4)
    report("B vq.l5.q", out["levels"][4].q, t["vq.l5.q"], 1e-4)
    report("B vq.quant_list", torch.stack([out["levels"][i].quantized for i in (3, 2, 1, 0)], 0), t["vq.quant_list"], 1e-4)
    report("B ot.score", ot, t["ot.score"], 1e-4)
    report("B dec.out", out["dec"].transpose(0, 1), t["dec.out"], 1e-4)
    report("B rec", out["rec"], t["rec"], 1e-4)
    report("B map14.l2", l2, t["map14.l2"], 1e-4)
    report("B map14.total", m14, t["map14.total"], 1e-3)
    report("B map224", m224, t["map224"], 1e-3)
    report("B score.image", score, t["score.image"], 1e-3)
    report("B loss.feature", feature_loss.reshape(1), t["loss.feature"], 1e-4)
    report("B loss.latent", latent.reshape(1), t["loss.latent"], 1e-4)
    report("B loss.total", (feature_loss + 0.25 * latent).reshape(1), t["loss.total"], 1e-4)


def set_c(g):
    net, _ = small_model(g)
    t = H.load_tensors(g / "hvq_small_trainstep.safetensors")
    feat, labels = t["input.feature_align"].to(DEV), t["input.labels"].to(DEV)
    net.train()
    out = net.train_loss(feat, labels)
    for lvl in range(5, 0, -1):
        L = out["levels"][lvl - 1]
        report_idx(f"C train.vq.l{lvl}.idx", L.idx, t[f"train.vq.l{lvl}.idx"])
        report(f"C train.vq.l{lvl}.diff", L.diff, t[f"train.vq.l{lvl}.diff"], 1e-4)
    report("C train.rec", out["rec"], t["train.rec"], 1e-4)
    for k in ("feature", "latent", "total"):
        report(f"C train.loss.{k}", out[k].reshape(1), t[f"train.loss.{k}"], 1e-4)
    buffers = dict(net.named_buffers())
    worst = ("", 0.0)
    names = [k for k in t if k.startswith("state_after.")]
    for k in names:
        d = (buffers[k[len("state_after."):]].cpu() - t[k]).abs().max().item()
        worst = max(worst, (k, d), key=lambda x: x[1])
    ROWS.append((f"C EMA codebooks after forward ({len(names)})", f"{worst[1]:.3g}", worst[0],
                 "ok" if worst[1] <= 1e-4 else "FAIL"))
    if worst[1] > 1e-4:
        FAILED.append("EMA codebooks")

    params = [p for p in net.parameters() if p.requires_grad]
    opt = H.reference_adamw(params)
    opt.zero_grad()
    out["total"].backward()
    named = dict(net.named_parameters())
    grads = [k for k in t if k.startswith("grad.")]
    worst, missing = ("", 0.0), []
    for k in grads:
        p = named.get(k[5:])
        if p is None or p.grad is None:
            missing.append(k)
            continue
        d = (p.grad.cpu() - t[k]).abs().max().item() / max(t[k].abs().max().item(), 1e-30)
        worst = max(worst, (k, d), key=lambda x: x[1])
    extra = [n for n, p in named.items() if p.grad is not None and f"grad.{n}" not in t]
    ok = worst[1] <= 1e-4 and not missing and not extra
    ROWS.append((f"C raw gradients ({len(grads)})", f"{worst[1]:.3g} rel", f"worst {worst[0]}; missing {missing[:3]}; extra {extra[:3]}",
                 "ok" if ok else "FAIL"))
    if not ok:
        FAILED.append("gradients")
    norm = torch.nn.utils.clip_grad_norm_(params, 0.1)
    report("C clip.total_norm", norm.reshape(1), t["clip.total_norm"], 1e-5, rel=True)
    opt.step()
    for k in [k for k in t if k.startswith("param_after.")]:
        report(f"C {k}", named[k[len('param_after.'):]], t[k], 2e-6)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--golden", default=os.environ.get("HVQ_GOLDEN_DIR", str(H.REPO.parent / "shared" / "golden")))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (strict fp32: TF32 off)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    global DEV
    DEV = torch.device(a.device)
    if DEV.type == "cuda":
        if not torch.cuda.is_available():
            sys.exit("check_golden.py: --device cuda but CUDA is not available to torch")
        import bench_torch
        bench_torch.set_precision(False)
    g = Path(a.golden)
    if not (g / "hvq_small.safetensors").is_file():
        sys.exit(f"golden files not found in {g} (use --golden DIR or HVQ_GOLDEN_DIR)")
    torch.manual_seed(0)
    set_a(g)
    set_b(g)
    set_c(g)
    lite0()
    w = max(len(r[0]) for r in ROWS)
    print(f"torch {torch.__version__}, device {a.device}, {a.threads} threads, golden {g}")
    for r in ROWS:
        print(f"{r[0]:<{w}}  {r[1]:>14}  {r[3]:>4}  {r[2]}")
    if FAILED:
        print(f"FAILED: {', '.join(FAILED)}")
        sys.exit(1)
    print("all golden checks passed")


if __name__ == "__main__":
    main()
