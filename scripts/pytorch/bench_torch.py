#!/usr/bin/env python3
"""Time the PyTorch reference (hvq_torch.py) the way `hvq bench` times the Rust port.

Same stages, same order, same warm-up/median/min rules, same JSON field names:
  preprocess, backbone, encoder, vq, decoder, map + ot, upsample + score, readback
(each followed by a device sync), then end to end without intermediate syncs, then training steps
(forward with the per-sample sequential EMA, loss, backward, clip 0.1, AdamW 1e-4) on cached
features (random features, as `hvq bench` uses) and with the frozen backbone in front.

Differences to `hvq bench`, stated in the JSON's `notes`:
  * preprocess starts from decoded 8-bit pixels (image decoding is not timed; the Rust bench decodes
    the PNG each time). The pixels have the size of the bench image (default: the shipped sample
    cell) and are converted to RGB, resized (antialiased bilinear) and normalised on the host.
  * training steps run at --train-batch (default 16); `hvq bench` uses --batch for them, so pass
    --train-batch equal to --batch for a like-for-like ratio (scripts/gpu-bench.sh does).

Usage:
  bench_torch.py --device cpu|cuda --config official|default [--batch 8] [--runs 6] [--threads N]
                 [--train-batch 16] [--model-dir weights/elpv-lite0] [--tf32] [--restack] [--kernels]
                 [--json FILE]

--kernels: after the timed runs, one more pass of each stage and of a training step under
torch.profiler, with the kernels (CUDA: device kernels and copies, CUPTI timing; CPU: operators,
self time) per stage in the report's "kernels", in the layout of `hvq bench --kernels`.
"""
import argparse
import json
import os
import platform
import struct
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hvq_torch as H  # noqa: E402

STAGES = ["preprocess", "backbone", "encoder", "vq", "decoder", "map + ot", "upsample + score", "readback"]
SAMPLE = H.REPO / "samples" / "mono-defect-cell0001.png"


def stats(name, v):
    v = sorted(v)
    return {"stage": name, "median_ms": v[len(v) // 2] if v else float("nan"), "min_ms": v[0] if v else float("nan")}


def image_size(path: Path):
    """(width, height) from a PNG or JPEG header."""
    b = path.read_bytes()
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", b[16:24])
    if b[:2] == b"\xff\xd8":
        i = 2
        while i < len(b):
            if b[i] != 0xFF:
                i += 1
                continue
            marker = b[i + 1]
            if marker in (0xC0, 0xC1, 0xC2):
                h, w = struct.unpack(">HH", b[i + 5: i + 9])
                return w, h
            i += 2 + struct.unpack(">H", b[i + 2: i + 4])[0]
    raise ValueError(f"{path}: cannot read the image size (PNG or JPEG expected)")


def machine(device: str) -> str:
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    s = f"{cpu}, {os.cpu_count()} threads, {platform.system().lower()}"
    if device == "cuda":
        s += f"; GPU {torch.cuda.get_device_name(0)}"
    return s


def peak_rss_mib():
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def set_precision(tf32: bool):
    """Strict IEEE fp32 by default (like the Rust port); --tf32 allows TF32 in matmuls and convs."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(torch.backends.cudnn, "conv"):
        # torch >= 2.9: the new per-backend API (mixing it with the legacy flags is an error)
        mode = "tf32" if tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
        torch.backends.cudnn.rnn.fp32_precision = mode
    else:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


TRAIN_STAGES = ["train forward", "train backward", "optimizer"]


class KernelProfile:
    """Kernels per stage, as `hvq bench --kernels` reports them: each stage runs under its own
    torch.profiler window (then a device sync), and the window's events are summed by name. On
    CUDA the events are the device's (kernels, copies and sets, timed by CUPTI); on the CPU the
    operators with their self time (an operator is not a kernel launch: CPU rows only test this)."""

    def __init__(self, device):
        from torch.profiler import ProfilerActivity
        self.cuda = device.type == "cuda"
        self.activities = [ProfilerActivity.CUDA] if self.cuda else [ProfilerActivity.CPU]
        self.stages = []

    def stage(self, name, work, sync):
        """Run `work()` as stage `name` and return its result."""
        from torch.profiler import profile
        with profile(activities=self.activities) as prof:
            out = work()
            sync()
        table = {}
        for e in prof.key_averages():
            if self.cuda:
                if e.device_type != torch.autograd.DeviceType.CUDA:
                    continue
                us = getattr(e, "self_device_time_total", None)
                if us is None:
                    us = e.self_cuda_time_total
            else:
                us = e.self_cpu_time_total
            count, ms = table.get(e.key, (0, 0.0))
            table[e.key] = (count + e.count, ms + us / 1e3)
        kernels = sorted(({"name": k, "launches": c, "ms": ms} for k, (c, ms) in table.items()),
                         key=lambda k: (-k["ms"], -k["launches"]))
        launches = sum(k["launches"] for k in kernels)
        self.stages.append({"stage": name, "launches": launches, "timed": launches,
                            "kernel_ms": sum(k["ms"] for k in kernels), "kernels": kernels})
        return out

    def report(self):
        return {"timing": "device (CUPTI)" if self.cuda else "cpu operators (self time)", "stages": self.stages}

    def print(self, stage_ms, top=5):
        print(f"\nkernels of one profiled pass ({self.report()['timing']})")
        print(f"{'stage':<30} {'launches':>9} {'kernel ms':>11} {'stage ms':>10} {'share':>7}")
        for s in self.stages:
            wall = stage_ms.get(s["stage"])
            share = f"{100 * s['kernel_ms'] / wall:.0f} %" if wall else "–"
            print(f"{s['stage']:<30} {s['launches']:>9} {s['kernel_ms']:>11.2f} "
                  f"{(f'{wall:.1f}' if wall is not None else '–'):>10} {share:>7}")
            for k in s["kernels"][:top]:
                name = k["name"] if len(k["name"]) <= 60 else k["name"][:59] + "…"
                print(f"    {name:<60} {k['launches']:>5} × {k['ms']:>9.3f} ms")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--config", choices=["official", "default"], default="default")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--train-batch", type=int, default=16)
    ap.add_argument("--no-train", action="store_true", help="skip the training-step timings")
    ap.add_argument("--model-dir", default=str(H.DEFAULT_MODEL_DIR), help="model directory for --config default")
    ap.add_argument("--image", default=str(SAMPLE), help="image whose size the preprocess input has")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 on the GPU (default: strict fp32)")
    ap.add_argument("--restack", action="store_true",
                    help="re-stack the class codebooks and experts on every call (as hvq does) instead of caching them")
    ap.add_argument("--kernels", action="store_true",
                    help="profile one more pass: kernels per stage (torch.profiler), as hvq bench --kernels")
    ap.add_argument("--json", help="write the report here")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("bench_torch.py: --device cuda but torch.cuda.is_available() is False "
                     f"(torch {torch.__version__}, CUDA build {torch.version.cuda})")
        set_precision(a.tf32)
        torch.backends.cudnn.benchmark = True
    dev = torch.device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    try:
        det = H.official_random() if a.config == "official" else H.load_model_dir(a.model_dir)
    except (OSError, ValueError) as e:
        sys.exit(f"bench_torch.py: cannot load the {a.config} model: {e}")
    H.prepare(det).to(dev)
    bcfg, hcfg = det.bcfg, det.hcfg
    size = bcfg.input_size
    classes = torch.tensor([i % hcfg.num_classes for i in range(a.batch)], device=dev)
    w, h = image_size(Path(a.image))
    g = torch.Generator().manual_seed(1)
    # One decoded 8-bit image per batch slot; gray images are replicated to RGB as hvq does.
    pixels = [torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g) for _ in range(a.batch)]
    mean = torch.tensor(bcfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(bcfg.std).view(1, 3, 1, 1)

    def preprocess(n=a.batch):
        xs = []
        for px in pixels[:n] if n <= len(pixels) else [pixels[i % len(pixels)] for i in range(n)]:
            x = px.permute(2, 0, 1).unsqueeze(0).float()
            if x.shape[-2:] != (size, size):
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            xs.append(x.round_().clamp_(0, 255))  # the resize's result is 8-bit again
        x = (torch.cat(xs, 0) / 255.0 - mean) / std
        return x.to(dev)

    net = det.net
    net.cache_stacks = not a.restack
    per_stage = [[] for _ in STAGES]
    e2e, e2e_queued = [], []
    with torch.inference_mode():
        for it in range(a.warmup + a.runs):
            t = []
            t0 = time.perf_counter(); x = preprocess(); sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); feat = det.features(x); sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); src, pos, hidden = net.encode(feat); sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); levels, inputs = net.quantize(src, hidden, classes); sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); _, rec = net.decode(levels, pos, classes, feat.shape); sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); m14 = H.map14(net, feat, rec, inputs[0], classes); sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m = H.upsample(m14, size)
            score = H.image_score(m, size // hcfg.feature_size)
            sync(); t.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); m.cpu(); score.cpu(); t.append(time.perf_counter() - t0)
            if it >= a.warmup:
                for s, v in zip(per_stage, t):
                    s.append(v * 1e3)
            # End to end, no intermediate syncs (the readback waits for the device).
            t0 = time.perf_counter()
            m, score = det(preprocess(), classes)
            queued = (time.perf_counter() - t0) * 1e3  # the host's share: all launched, none waited on
            m.cpu(); score.cpu()
            if it >= a.warmup:
                e2e.append((time.perf_counter() - t0) * 1e3)
                e2e_queued.append(queued)

    # The host's cost of one operation (as hvq bench's operation_host_us): 256 out-of-place
    # additions on a one-element tensor, the time until all are launched, per addition.
    op_us = []
    with torch.inference_mode():
        for it in range(a.warmup + a.runs):
            x = torch.zeros(1, device=dev)
            sync()
            t0 = time.perf_counter()
            for _ in range(256):
                x = x + 1
            queued = (time.perf_counter() - t0) * 1e6 / 256
            assert x.item() == 256.0, x
            if it >= a.warmup:
                op_us.append(queued)
    op_us.sort()

    train_cached, train_uncached, train_queued = [], [], []
    if not a.no_train:
        tb = a.train_batch
        tclasses = torch.tensor([i % hcfg.num_classes for i in range(tb)], device=dev)
        tnet, params, opt = H.for_training(net)
        fch, fs = hcfg.feature_channels, hcfg.feature_size
        for it in range(a.warmup + a.runs):
            for with_backbone in (False, True):
                t0 = time.perf_counter()
                if with_backbone:
                    with torch.no_grad():
                        feat = det.features(preprocess(tb))
                else:
                    feat = torch.randn(tb, fch, fs, fs, device=dev)
                out = tnet.train_loss(feat, tclasses)
                opt.zero_grad(set_to_none=True)
                out["total"].backward()
                torch.nn.utils.clip_grad_norm_(params, 0.1)
                opt.step()
                queued = (time.perf_counter() - t0) * 1e3
                sync()
                if it >= a.warmup:
                    (train_uncached if with_backbone else train_cached).append((time.perf_counter() - t0) * 1e3)
                    if not with_backbone:
                        train_queued.append(queued)

    kernels = None
    if a.kernels:
        kp = KernelProfile(dev)
        with torch.inference_mode():
            x = kp.stage("preprocess", preprocess, sync)
            feat = kp.stage("backbone", lambda: det.features(x), sync)
            src, pos, hidden = kp.stage("encoder", lambda: net.encode(feat), sync)
            levels, inputs = kp.stage("vq", lambda: net.quantize(src, hidden, classes), sync)
            _, rec = kp.stage("decoder", lambda: net.decode(levels, pos, classes, feat.shape), sync)
            m14 = kp.stage("map + ot", lambda: H.map14(net, feat, rec, inputs[0], classes), sync)

            def upsample_and_score():
                m = H.upsample(m14, size)
                return m, H.image_score(m, size // hcfg.feature_size)

            m, score = kp.stage("upsample + score", upsample_and_score, sync)
            kp.stage("readback", lambda: (m.cpu(), score.cpu()), sync)
        if not a.no_train:
            tb = a.train_batch
            tclasses = torch.tensor([i % hcfg.num_classes for i in range(tb)], device=dev)
            feat = torch.randn(tb, hcfg.feature_channels, hcfg.feature_size, hcfg.feature_size, device=dev)
            sync()
            out = kp.stage("train forward", lambda: tnet.train_loss(feat, tclasses), sync)

            def backward():
                opt.zero_grad(set_to_none=True)
                out["total"].backward()

            def optimizer():
                torch.nn.utils.clip_grad_norm_(params, 0.1)
                opt.step()

            kp.stage("train backward", backward, sync)
            kp.stage("optimizer", optimizer, sync)
        kernels = kp.report()

    end = stats("end to end", e2e)
    report = {
        "machine": machine(a.device),
        "device": a.device,
        "model": a.config,
        "batch": a.batch,
        "runs": a.runs,
        "stages": [stats(n, v) for n, v in zip(STAGES, per_stage)],
        "end_to_end": end,
        # The host's share (as hvq bench's): until everything is launched, before waiting for it.
        "end_to_end_queued": stats("end to end, host queued", e2e_queued),
        "images_per_second": a.batch / (end["median_ms"] / 1e3),
        "train_batch": a.train_batch,
        "train_step_cached": stats("train step (cached features)", train_cached) if train_cached else None,
        "operation_host_us": op_us[len(op_us) // 2],
        "train_step_queued": stats("train step, host queued", train_queued) if train_queued else None,
        "train_step_uncached": stats("train step (with backbone)", train_uncached) if train_uncached else None,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if a.device == "cuda" else None,
        "framework": f"PyTorch {torch.__version__}" + (f" (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})" if a.device == "cuda" else ""),
        "threads": torch.get_num_threads(),
        # What the CPU figures ran on: ATen's vector kernels, and the caps MKL and oneDNN were given
        # (scripts/cpu-isa-bench.sh sets them for the AVX2 rows).
        "cpu_isa": {
            "aten_capability": torch.backends.cpu.get_cpu_capability(),
            **{k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")},
        },
        "precision": ("tf32 allowed" if a.tf32 else "fp32 (TF32 off)") if a.device == "cuda" else "fp32",
        "warmup": a.warmup,
        "kernels": kernels,
        "notes": [
            "preprocess starts from decoded 8-bit pixels of the bench image's size (decoding not timed)",
            f"training steps at batch {a.train_batch}; hvq bench uses --batch for them",
            "no dropout (hvq bench sets the official 0.1 to 0 on its side too); inference under torch.inference_mode()",
            "class codebooks and experts re-stacked on every call" if a.restack else
            "stacked class codebooks and experts cached between inference calls (hvq re-stacks them per call; --restack mirrors that)",
        ],
    }
    print(f"{a.config} on {a.device} ({report['machine']}), batch {a.batch}, {a.runs} runs, {report['framework']}, {report['threads']} threads")
    print(f"{'stage':<40} {'median ms':>12} {'min ms':>12}")
    rows = report["stages"] + [end, report["end_to_end_queued"]] + [
        r for r in (report["train_step_cached"], report["train_step_queued"], report["train_step_uncached"]) if r]
    for s in rows:
        label = s["stage"] + (f" [batch {a.train_batch}]" if s["stage"].startswith("train") else "")
        print(f"{label:<40} {s['median_ms']:>12.1f} {s['min_ms']:>12.1f}")
    print(f"{'ms per image (end to end)':<40} {end['median_ms'] / a.batch:>12.1f}")
    print(f"{'images per second':<40} {report['images_per_second']:>12.1f}")
    print(f"{'host µs per operation':<40} {report['operation_host_us']:>12.1f}")
    if a.kernels:
        kp.print({st["stage"]: st["median_ms"] for st in report["stages"]})
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(a.json + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(a.json)
        print(f"report written to {a.json}")


if __name__ == "__main__":
    main()
