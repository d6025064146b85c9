#!/usr/bin/env python3
"""Writes the reference that core/tests/backbone_train_mode.rs checks hvq's train-mode backbone against.

EfficientNet-Lite0 with the shipped ImageNet weights (hvq_torch.py, written from the spec) is put in
PyTorch train mode: every BatchNorm normalises with the batch's statistics and updates its running
statistics (torch.nn.BatchNorm2d). One forward pass on a seeded batch; the momentum is raised to 0.5 so
the update is far above float32 noise. Drop-connect is random, so it is not part of this fixture (the
Rust unit tests check it statistically); hvq runs this comparison with drop-connect 0.

Output: core/tests/fixtures/backbone_train_mode/lite0.safetensors with
  input               (3, 3, 64, 64)   the normalised batch
  tap.{i}             the tapped block outputs, in tap order
  state.{name}        every running_mean / running_var after the pass (lukemelas names)
Run once, commit the file; the Rust tests need no Python:

    /tmp/torchvenv/bin/python scripts/pytorch/make_train_mode_fixture.py
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import hvq_torch as H  # noqa: E402

MOMENTUM = 0.5
OUT = H.REPO / "core" / "tests" / "fixtures" / "backbone_train_mode" / "lite0.safetensors"


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    enc = H.prepare(H.EfficientNet(H.BackboneCfg.lite0()))
    H.load_module(enc, H.load_tensors(H.LITE0_WEIGHTS), "lite0")
    for m in enc.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = MOMENTUM
    enc.train()
    g = torch.Generator().manual_seed(2024)
    x = torch.randn(3, 3, 64, 64, generator=g)
    with torch.no_grad():
        taps = enc(x)
    out = {"input": x.contiguous()}
    for i, t in enumerate(taps):
        out[f"tap.{i}"] = t.contiguous()
    for name, buf in enc.named_buffers():
        if name.endswith("running_mean") or name.endswith("running_var"):
            out[f"state.{name}"] = buf.detach().contiguous()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(OUT), metadata={"momentum": str(MOMENTUM), "torch": torch.__version__,
                                       "made_by": "scripts/pytorch/make_train_mode_fixture.py"})
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} tensors)")


if __name__ == "__main__":
    main()
