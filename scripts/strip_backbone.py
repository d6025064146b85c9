#!/usr/bin/env python3
"""Copy a model directory without its backbone tensors (`enc.*`).

A model whose backbone is the embedded EfficientNet-Lite0 needs no backbone tensors in its file: hvq
loads the embedded ImageNet weights when `enc.*` is absent. Used to ship the default model small.
Usage: strip_backbone.py SRC_DIR DST_DIR   (standard library only)
"""
import json
import shutil
import struct
import sys
from pathlib import Path

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
raw = (src / "model.safetensors").read_bytes()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8 : 8 + n])
base = 8 + n
meta = header.pop("__metadata__", None)
keep = sorted(k for k in header if not k.startswith("enc."))
out_header, blobs, offset = {}, [], 0
for k in keep:
    a, b = header[k]["data_offsets"]
    blob = raw[base + a : base + b]
    out_header[k] = {"dtype": header[k]["dtype"], "shape": header[k]["shape"], "data_offsets": [offset, offset + len(blob)]}
    blobs.append(blob)
    offset += len(blob)
if meta is not None:
    out_header["__metadata__"] = meta
text = json.dumps(out_header, separators=(",", ":")).encode()
text += b" " * ((8 - len(text) % 8) % 8)
dst.mkdir(parents=True, exist_ok=True)
(dst / "model.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
shutil.copy(src / "config.json", dst / "config.json")
print(f"{len(keep)} tensors kept, {len(header) - len(keep)} backbone tensors dropped -> {dst}")
