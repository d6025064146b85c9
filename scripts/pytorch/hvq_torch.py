#!/usr/bin/env python3
"""HVQ-Trans in plain PyTorch, written from the project's specification (docs/hvq-trans.md and the
golden README), as a timing and parity reference for the Rust port.

Parameter names are the official ones, so the same safetensors files load in both:
  * backbone (lukemelas EfficientNet names): `_conv_stem`, `_bn0`, `_blocks.{i}._expand_conv`, ...
    (under `enc.` in a model file);
  * network: `quantize_conv_t`, `pos_embed.{row,col}_embed`, `encoder.layers.{i}.*`,
    `quantize_list_{1..N+1}.{class}.{embed,embed_avg,cluster_size}` (embed is (D, K), codes are
    columns), `decoder.layers.{i}.*`, `decoder.norm`, `output_proj_list.{class}`,
    optional `classifier.fc{1,2}` (the project's paper preset).

Tokens are batch-first (B, L, E) inside this module; l = h * W + w (row-major).
Only torch, numpy and safetensors are needed. No dropout anywhere (the Rust port has none either).
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
LITE0_WEIGHTS = REPO / "weights" / "efficientnet-lite0.safetensors"
DEFAULT_MODEL_DIR = REPO / "weights" / "elpv-lite0"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
MVTEC_CLASSES = [
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
]

# ----------------------------------------------------------------------------------------------
# Configuration (mirrors the JSON a model directory's config.json holds)
# ----------------------------------------------------------------------------------------------


@dataclass
class BackboneCfg:
    kind: str = "efficientnet-b4"  # or "efficientnet-lite0"
    taps: List[int] = field(default_factory=lambda: [1, 5, 9, 21])
    static_padding_size: Optional[int] = 380
    input_size: int = 224
    feature_size: int = 14
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))

    @staticmethod
    def b4() -> "BackboneCfg":
        return BackboneCfg()

    @staticmethod
    def lite0() -> "BackboneCfg":
        return BackboneCfg(kind="efficientnet-lite0", taps=[0, 2, 4, 10], static_padding_size=None,
                           mean=[127.0 / 255.0] * 3, std=[128.0 / 255.0] * 3)

    @staticmethod
    def from_json(j: dict) -> "BackboneCfg":
        norm = j.get("input_norm") or {}
        return BackboneCfg(kind=j["kind"], taps=list(j["taps"]),
                           static_padding_size=j.get("static_padding_size"),
                           input_size=j.get("input_size", 224), feature_size=j.get("feature_size", 14),
                           mean=list(norm.get("mean", IMAGENET_MEAN)), std=list(norm.get("std", IMAGENET_STD)))

    def feature_channels(self) -> int:
        specs = block_specs(self.kind)
        return sum(specs[t].out_ch for t in self.taps)


@dataclass
class HvqCfg:
    feature_channels: int = 272
    embed_dim: int = 256
    heads: int = 8
    ffn_dim: int = 1024
    enc_layers: int = 4
    dec_layers: int = 4
    num_classes: int = 15
    codes: int = 512
    feature_size: int = 14
    ema_decay: float = 0.99
    ema_eps: float = 1e-5
    commitment_weight: float = 0.25
    ot_weight: float = 80.0
    ot_temperature: Optional[float] = None  # None = K (the official code's b.shape[1])
    class_names: List[str] = field(default_factory=lambda: list(MVTEC_CLASSES))
    hierarchical: bool = True
    switch_codebooks: bool = True
    switch_experts: bool = True
    pot_weight: float = 0.0
    pot_temperature: Optional[float] = None
    classifier_hidden: Optional[int] = None
    classifier_weight: float = 1.0

    @staticmethod
    def from_json(j: dict) -> "HvqCfg":
        c = HvqCfg()
        for k in ("feature_channels", "embed_dim", "heads", "ffn_dim", "enc_layers", "dec_layers",
                  "num_classes", "codes", "feature_size", "ema_decay", "ema_eps", "commitment_weight",
                  "ot_weight", "ot_temperature", "pot_weight", "pot_temperature"):
            if k in j:
                setattr(c, k, j[k])
        c.class_names = list(j.get("class_names") or [str(i) for i in range(c.num_classes)])
        abl = j.get("ablation") or {}
        c.hierarchical = abl.get("hierarchical", True)
        c.switch_codebooks = abl.get("switch_codebooks", True)
        c.switch_experts = abl.get("switch_experts", True)
        cls = j.get("classifier")
        if cls:
            c.classifier_hidden = cls.get("hidden", 256)
            c.classifier_weight = cls.get("weight", 1.0)
        return c

    def vq_levels(self) -> int:
        return self.enc_layers + 1 if self.hierarchical else 1

    def ot_tau(self) -> float:
        return float(self.ot_temperature) if self.ot_temperature is not None else float(self.codes)

    def pot_tau(self) -> float:
        return float(self.pot_temperature) if self.pot_temperature is not None else float(self.codes)


# ----------------------------------------------------------------------------------------------
# EfficientNet (B4 with swish + SE, Lite0 with ReLU6 and no SE), lukemelas names
# ----------------------------------------------------------------------------------------------

# The B0 stage table: (repeats, kernel, stride, expand, in, out)
B0_STAGES = [
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
]
VARIANTS = {"efficientnet-b4": (1.4, 1.8, True), "efficientnet-lite0": (1.0, 1.0, False)}


@dataclass
class BlockSpec:
    in_ch: int
    out_ch: int
    expand: int
    kernel: int
    stride: int
    se_ch: Optional[int]


def round_filters(filters: int, width: float) -> int:
    """lukemelas round_filters: scale, round to a multiple of 8, never drop more than 10 %."""
    f = filters * width
    new = max(8, int(f + 4) // 8 * 8)
    if new < 0.9 * f:
        new += 8
    return new


def block_specs(kind: str) -> List[BlockSpec]:
    width, depth, se = VARIANTS[kind]
    out = []
    for repeats, k, s, e, cin, cout in B0_STAGES:
        cin, cout = round_filters(cin, width), round_filters(cout, width)
        for r in range(int(math.ceil(depth * repeats))):
            i = cin if r == 0 else cout
            out.append(BlockSpec(i, cout, e, k, s if r == 0 else 1, max(1, int(i * 0.25)) if se else None))
    return out


def same_pad(size: int, k: int, s: int) -> Tuple[int, int]:
    """TF "SAME" padding (begin, end) for one axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class PaddedConv(nn.Conv2d):
    """Conv2d whose zero padding is TF SAME: fixed at construction (`static`), or from the input."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=False, static: Optional[Tuple[int, int]] = None):
        sym = static is not None and static[0] == static[1]
        super().__init__(cin, cout, k, stride=stride, groups=groups, bias=bias,
                         padding=static[0] if sym else 0)
        # (left, right, top, bottom) for F.pad when it cannot be folded into the conv
        self.extra_pad = None if (static is None or sym) else (static[0], static[1], static[0], static[1])
        self.dynamic = static is None and k > 1

    def forward(self, x):
        if self.dynamic:
            ph = same_pad(x.shape[2], self.kernel_size[0], self.stride[0])
            pw = same_pad(x.shape[3], self.kernel_size[1], self.stride[1])
            x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        elif self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


def bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=1e-3, momentum=0.01)


class MBConv(nn.Module):
    def __init__(self, spec: BlockSpec, act, static: Optional[Tuple[int, int]]):
        super().__init__()
        self.spec, self.act = spec, act
        exp = spec.in_ch * spec.expand
        if spec.expand != 1:
            self._expand_conv = nn.Conv2d(spec.in_ch, exp, 1, bias=False)
            self._bn0 = bn(exp)
        self._depthwise_conv = PaddedConv(exp, exp, spec.kernel, spec.stride, groups=exp, static=static)
        self._bn1 = bn(exp)
        if spec.se_ch is not None:
            self._se_reduce = nn.Conv2d(exp, spec.se_ch, 1, bias=True)
            self._se_expand = nn.Conv2d(spec.se_ch, exp, 1, bias=True)
        self._project_conv = nn.Conv2d(exp, spec.out_ch, 1, bias=False)
        self._bn2 = bn(spec.out_ch)
        self.residual = spec.stride == 1 and spec.in_ch == spec.out_ch

    def forward(self, inp):
        x = inp
        if self.spec.expand != 1:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        if self.spec.se_ch is not None:
            s = x.mean((2, 3), keepdim=True)
            s = self._se_expand(self.act(self._se_reduce(s)))
            x = x * torch.sigmoid(s)
        x = self._bn2(self._project_conv(x))
        return x + inp if self.residual else x


class EfficientNet(nn.Module):
    """Stem and blocks up to the last tap; `forward` returns the tapped block outputs."""

    def __init__(self, cfg: BackboneCfg):
        super().__init__()
        self.cfg = cfg
        act = F.silu if cfg.kind == "efficientnet-b4" else (lambda t: F.relu6(t))
        self.act = act
        specs = block_specs(cfg.kind)[: max(cfg.taps) + 1]
        size = cfg.static_padding_size
        stem_pad = same_pad(size, 3, 2) if size else None
        stem = round_filters(32, VARIANTS[cfg.kind][0])
        self._conv_stem = PaddedConv(3, stem, 3, 2, static=stem_pad)
        self._bn0 = bn(stem)
        size = -(-size // 2) if size else None
        blocks = []
        for s in specs:
            # Static SAME padding follows the image size block by block, as lukemelas does.
            pad = same_pad(size, s.kernel, s.stride) if size else None
            blocks.append(MBConv(s, act, pad))
            size = -(-size // s.stride) if size else None
        self._blocks = nn.ModuleList(blocks)

    def conv_table(self) -> Dict[str, Tuple[int, int, int, int]]:
        """Padding (left, right, top, bottom) of every k>1 conv when static (for the golden check)."""
        out = {}
        for name, m in self.named_modules():
            if isinstance(m, PaddedConv) and not m.dynamic:
                p = m.extra_pad or (m.padding[0], m.padding[0], m.padding[0], m.padding[0])
                out[name] = tuple(p)
        return out

    def forward(self, x) -> List[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        taps = []
        for i, b in enumerate(self._blocks):
            x = b(x)
            if i in self.cfg.taps:
                taps.append(x)
        return taps


def align(taps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """Bilinear align_corners=True resize of each tap to size x size, channel concat."""
    return torch.cat([t if t.shape[-1] == size and t.shape[-2] == size else
                      F.interpolate(t, size=(size, size), mode="bilinear", align_corners=True)
                      for t in taps], 1)


# ----------------------------------------------------------------------------------------------
# The HVQ network
# ----------------------------------------------------------------------------------------------


class MHA(nn.Module):
    """nn.MultiheadAttention's parameters ([Wq; Wk; Wv] packed), batch-first, no mask/dropout."""

    def __init__(self, e: int, heads: int):
        super().__init__()
        self.e, self.h = e, heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * e, e))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * e))
        self.out_proj = nn.Linear(e, e)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, q_in, k_in, v_in, same_qk: bool = False):
        b, lq, e = q_in.shape
        lk = k_in.shape[1]
        w, bias = self.in_proj_weight, self.in_proj_bias
        if same_qk:
            q, k = F.linear(q_in, w[: 2 * e], bias[: 2 * e]).chunk(2, -1)
        else:
            q = F.linear(q_in, w[:e], bias[:e])
            k = F.linear(k_in, w[e: 2 * e], bias[e: 2 * e])
        v = F.linear(v_in, w[2 * e:], bias[2 * e:])
        hd = e // self.h
        q = q.view(b, lq, self.h, hd).transpose(1, 2)
        k = k.view(b, lk, self.h, hd).transpose(1, 2)
        v = v.view(b, lk, self.h, hd).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(hd)
        return self.out_proj(o.transpose(1, 2).reshape(b, lq, e))


def xavier_linear(i: int, o: int) -> nn.Linear:
    lin = nn.Linear(i, o)
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn = MHA(d, heads)
        self.linear1, self.linear2 = xavier_linear(d, ffn), xavier_linear(ffn, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x, pos):
        qk = x + pos
        x = self.norm1(x + self.self_attn(qk, qk, x, same_qk=True))
        return self.norm2(x + self.linear2(F.relu(self.linear1(x))))


class Encoder(nn.Module):
    def __init__(self, n, d, heads, ffn):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ffn) for _ in range(n))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.self_attn, self.multihead_attn = MHA(d, heads), MHA(d, heads)
        self.linear1, self.linear2 = xavier_linear(d, ffn), xavier_linear(ffn, d)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, t, mem, pos):
        q = t + pos
        t = self.norm1(t + self.self_attn(q, q, t, same_qk=True))
        t = self.norm2(t + self.multihead_attn(t + pos, mem + pos, mem))
        return self.norm3(t + self.linear2(F.relu(self.linear1(t))))


class Decoder(nn.Module):
    def __init__(self, n, d, heads, ffn):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d, heads, ffn) for _ in range(n))
        self.norm = nn.LayerNorm(d)


class PosEmbed(nn.Module):
    def __init__(self, side, dim):
        super().__init__()
        self.row_embed, self.col_embed = nn.Embedding(side, dim // 2), nn.Embedding(side, dim // 2)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self):
        row, col = self.row_embed.weight, self.col_embed.weight  # (H, d/2) by h, (W, d/2) by w
        h, w, half = row.shape[0], col.shape[0], row.shape[1]
        pos = torch.cat([col.unsqueeze(0).expand(h, w, half), row.unsqueeze(1).expand(h, w, half)], -1)
        return pos.reshape(1, h * w, 2 * half)  # pos[l = h*W + w] = concat(col[w], row[h])


class Codebook(nn.Module):
    """EMA codebook: embed (D, K) with codes as columns, embed_avg (D, K), cluster_size (K)."""

    def __init__(self, d, k):
        super().__init__()
        e = torch.randn(d, k)
        self.register_buffer("embed", e)
        self.register_buffer("embed_avg", e.clone())
        self.register_buffer("cluster_size", torch.zeros(k))


class Classifier(nn.Module):
    def __init__(self, f, hidden, classes):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(f, hidden), nn.Linear(hidden, classes)

    def forward(self, feature):
        return self.fc2(F.relu(self.fc1(feature.mean((2, 3)))))


@dataclass
class Level:
    quantized: torch.Tensor  # straight-through x + (q - x), (B, L, D)
    idx: torch.Tensor  # (B, L) int64
    diff: torch.Tensor  # per-sample mean((q - x)^2), (B,)
    q: torch.Tensor  # selected codes (B, L, D), no gradient


def nearest(x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """First arg-min of ||x||^2 - 2 x.E + ||E||^2; x (..., L, D), e (..., D, K) -> (..., L)."""
    d = x.pow(2).sum(-1, keepdim=True) - 2 * (x @ e) + e.pow(2).sum(-2, keepdim=True)
    return d.argmin(-1)


def straight_through(x: torch.Tensor, q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    q = q.detach()
    return x + (q - x).detach(), (q - x).pow(2).mean((1, 2))


class HVQ(nn.Module):
    """HVQ_TR_switch_OT without its backbone; input is the aligned feature (B, F, H, W)."""

    def __init__(self, cfg: HvqCfg):
        super().__init__()
        self.cfg = cfg
        c, f = cfg.embed_dim, cfg.feature_channels
        self.quantize_conv_t = nn.Conv2d(f, c, 1)
        self.pos_embed = PosEmbed(cfg.feature_size, c)
        self.encoder = Encoder(cfg.enc_layers, c, cfg.heads, cfg.ffn_dim)
        n = cfg.vq_levels()
        slots = cfg.num_classes if cfg.switch_codebooks else 1
        for lvl in range(1, n + 1):  # quantize_list_1 = bottom (src), quantize_list_n = top (hN)
            dim = c if lvl == n else 2 * c
            setattr(self, f"quantize_list_{lvl}", nn.ModuleList(Codebook(dim, cfg.codes) for _ in range(slots)))
        self.decoder = Decoder(cfg.dec_layers, 2 * c, cfg.heads, cfg.ffn_dim)
        self.output_proj_list = nn.ModuleList(
            nn.Linear(2 * c, f) for _ in range(cfg.num_classes if cfg.switch_experts else 1))
        self.classifier = Classifier(f, cfg.classifier_hidden, cfg.num_classes) if cfg.classifier_hidden else None
        # Stacked class codebooks / expert weights are cached between inference calls (invalidated
        # by EMA updates); set cache_stacks = False to re-stack on every call as hvq does.
        self.cache_stacks = True
        self._stack_cache: Dict[int, torch.Tensor] = {}
        self._expert_cache: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    # -- helpers -----------------------------------------------------------------------------
    def books(self, level: int) -> nn.ModuleList:
        """Codebooks of level `level` (1 = bottom)."""
        return getattr(self, f"quantize_list_{level}")

    def slots(self, classes: torch.Tensor, switch: bool) -> torch.Tensor:
        return classes if switch else torch.zeros_like(classes)

    def stacked(self, level: int) -> torch.Tensor:
        """All class codebooks of a level (S, D, K); cached until invalidate() (EMA updates)."""
        if not self.cache_stacks:
            return torch.stack([b.embed for b in self.books(level)], 0)
        if level not in self._stack_cache:
            self._stack_cache[level] = torch.stack([b.embed for b in self.books(level)], 0)
        return self._stack_cache[level]

    def invalidate(self):
        self._stack_cache.clear()
        self._expert_cache = None

    def experts(self) -> Tuple[torch.Tensor, torch.Tensor]:
        if self._expert_cache is None or torch.is_grad_enabled() or not self.cache_stacks:
            w = torch.stack([e.weight for e in self.output_proj_list], 0)  # (S, F, 2C)
            b = torch.stack([e.bias for e in self.output_proj_list], 0)  # (S, F)
            if torch.is_grad_enabled() or not self.cache_stacks:
                return w, b
            self._expert_cache = (w, b)
        return self._expert_cache

    # -- stages --------------------------------------------------------------------------------
    def encode(self, feature: torch.Tensor):
        src = self.quantize_conv_t(feature).flatten(2).transpose(1, 2)  # (B, L, C)
        pos = self.pos_embed()
        hidden, x = [], src
        for layer in self.encoder.layers:
            x = layer(x, pos)
            hidden.append(x)
        return src, pos, hidden

    def quantize(self, src, hidden, classes: torch.Tensor, train: bool = False):
        """All levels, top first. Returns (levels, inputs), index 0 = level 1 (bottom)."""
        n = self.cfg.vq_levels()
        quant = self._quant_train if train else self._quant_eval
        top_in = hidden[-1]
        top = quant(n, top_in, classes)
        levels: List[Optional[Level]] = [None] * n
        inputs: List[Optional[torch.Tensor]] = [None] * n
        levels[n - 1], inputs[n - 1] = top, top_in
        for lvl in range(n - 1, 0, -1):
            below = src if lvl == 1 else hidden[lvl - 2]
            x = torch.cat([below, top.quantized], -1)
            inputs[lvl - 1], levels[lvl - 1] = x, quant(lvl, x, classes)
        return levels, inputs

    def _quant_eval(self, level: int, x: torch.Tensor, classes: torch.Tensor) -> Level:
        e = self.stacked(level)[self.slots(classes, self.cfg.switch_codebooks)]  # (B, D, K)
        idx = nearest(x, e)
        q = torch.gather(e.transpose(1, 2), 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        quantized, diff = straight_through(x, q)
        return Level(quantized, idx, diff, q)

    @torch.no_grad()
    def _ema_sample(self, book: Codebook, xi: torch.Tensor, idx: torch.Tensor):
        cfg = self.cfg
        onehot = F.one_hot(idx, cfg.codes).to(xi.dtype)
        book.cluster_size.mul_(cfg.ema_decay).add_(onehot.sum(0), alpha=1 - cfg.ema_decay)
        book.embed_avg.mul_(cfg.ema_decay).add_(xi.t() @ onehot, alpha=1 - cfg.ema_decay)
        n = book.cluster_size.sum()
        smoothed = (book.cluster_size + cfg.ema_eps) / (n + cfg.codes * cfg.ema_eps) * n
        book.embed.copy_(book.embed_avg / smoothed.unsqueeze(0))

    def _quant_train(self, level: int, x: torch.Tensor, classes: torch.Tensor) -> Level:
        """Per sample, in batch order: nearest code with the class's current codebook, then its
        EMA update, so a later sample of the same class sees the updated codebook."""
        books = self.books(level)
        slots = self.slots(classes, self.cfg.switch_codebooks).tolist()
        xs = x.detach()
        qs, idxs = [], []
        with torch.no_grad():
            for i, s in enumerate(slots):
                e = books[s].embed
                idx = nearest(xs[i], e)
                qs.append(e.t()[idx])  # a copy, taken before the update
                idxs.append(idx)
                self._ema_sample(books[s], xs[i], idx)
        q = torch.stack(qs, 0)
        quantized, diff = straight_through(x, q)
        return Level(quantized, torch.stack(idxs, 0), diff, q)

    def decode(self, levels: List[Level], pos, classes: torch.Tensor, shape):
        b, f, h, w = shape
        if self.cfg.hierarchical:
            mems = [levels[l].quantized for l in range(len(levels) - 2, -1, -1)]  # level N-1 .. 1
        else:
            q = levels[0].quantized
            mems = [torch.cat([q, q], -1)] * self.cfg.dec_layers
        pos2 = torch.cat([pos, pos], -1)
        t = mems[0]
        for layer, mem in zip(self.decoder.layers, mems):
            t = layer(t, mem, pos2)
        t = self.decoder.norm(t)
        we, be = self.experts()
        ids = self.slots(classes, self.cfg.switch_experts)
        rec = torch.baddbmm(be[ids].unsqueeze(1), t, we[ids].transpose(1, 2))  # (B, L, F)
        return t, rec.transpose(1, 2).reshape(b, f, h, w)

    def ot_score(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """sum_k softmax_k(x.e_k / tau) (1 - cos(x, e_k)) on level 1, (B, L)."""
        e = self.stacked(1)[self.slots(classes, self.cfg.switch_codebooks)]
        dots = x @ e
        denom = (x.norm(dim=-1, keepdim=True) * e.norm(dim=-2, keepdim=True)).clamp_min(1.1754944e-38)
        p = torch.softmax(dots / self.cfg.ot_tau(), -1)
        return (p * (1 - dots / denom)).sum(-1)

    def pot_loss(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """The project's reading of the paper's POT loss, per sample (B,)."""
        e = e.detach()
        dots = x @ e
        cost = 1 - dots / (x.norm(dim=-1, keepdim=True) * e.norm(dim=-2, keepdim=True)).clamp_min(1.1754944e-38)
        logits = dots / self.cfg.pot_tau()
        fwd = (torch.softmax(logits, 2) * cost).sum(2).mean(1)
        bwd = (torch.softmax(logits, 1) * cost).sum(1).mean(1)
        return fwd + bwd

    # -- whole passes ----------------------------------------------------------------------------
    def forward_eval(self, feature, classes):
        logits = self.classifier(feature) if self.classifier is not None else None
        src, pos, hidden = self.encode(feature)
        levels, inputs = self.quantize(src, hidden, classes)
        dec, rec = self.decode(levels, pos, classes, feature.shape)
        return dict(src=src, hidden=hidden, levels=levels, inputs=inputs, dec=dec, rec=rec, logits=logits)

    def scores(self, feature, out, classes, input_size: int):
        """L2 map + w * OT, x16 upsample (align corners), image score = max of avg-pool."""
        m14 = map14(self, feature, out["rec"], out["inputs"][0], classes)
        m = upsample(m14, input_size)
        return m14, m, image_score(m, input_size // self.cfg.feature_size)

    def train_loss(self, feature, classes):
        """Training forward (sequential EMA) and the configured objective."""
        cfg = self.cfg
        self.invalidate()
        logits = self.classifier(feature) if self.classifier is not None else None
        src, pos, hidden = self.encode(feature)
        snapshots = None
        if cfg.pot_weight:
            ids = self.slots(classes, cfg.switch_codebooks)
            snapshots = [self.stacked(l)[ids].clone() for l in range(1, cfg.vq_levels() + 1)]
        levels, inputs = self.quantize(src, hidden, classes, train=True)
        self.invalidate()
        dec, rec = self.decode(levels, pos, classes, feature.shape)
        feat_loss = F.mse_loss(rec, feature)
        latent = sum(l.diff.mean() for l in levels)
        total = feat_loss + cfg.commitment_weight * latent
        if snapshots is not None:
            pot = sum(self.pot_loss(x, e).mean() for x, e in zip(inputs, snapshots))
            total = total + cfg.pot_weight * pot
        if logits is not None:
            total = total + cfg.classifier_weight * F.cross_entropy(logits, classes)
        return dict(levels=levels, rec=rec, feature=feat_loss, latent=latent, total=total)


def map14(net: HVQ, feature, rec, level1_input, classes):
    m = (rec - feature).pow(2).sum(1, keepdim=True).sqrt()
    if net.cfg.ot_weight:
        b, _, h, w = m.shape
        m = m + net.cfg.ot_weight * net.ot_score(level1_input, classes).view(b, 1, h, w)
    return m


def upsample(m, size: int):
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=True)


def image_score(m, pool: int):
    return F.avg_pool2d(m, pool, stride=1).flatten(1).max(1).values


# ----------------------------------------------------------------------------------------------
# Whole detector and loading
# ----------------------------------------------------------------------------------------------


class Detector(nn.Module):
    def __init__(self, bcfg: BackboneCfg, hcfg: HvqCfg):
        super().__init__()
        self.bcfg, self.hcfg = bcfg, hcfg
        self.enc = EfficientNet(bcfg)
        self.net = HVQ(hcfg)
        self.register_buffer("mean", torch.tensor(bcfg.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(bcfg.std).view(1, 3, 1, 1))

    def features(self, x):
        return align(self.enc(x), self.bcfg.feature_size)

    def forward(self, x, classes):
        feat = self.features(x)
        out = self.net.forward_eval(feat, classes)
        m14, m, score = self.net.scores(feat, out, classes, self.bcfg.input_size)
        return m, score


def load_tensors(path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


def load_module(module: nn.Module, tensors: Dict[str, torch.Tensor], what: str,
                ignore: Sequence[str] = ("input_proj.",)) -> None:
    """Copy `tensors` into the module's parameters and buffers by name, checking shapes; every
    module entry must be present (except BatchNorm's num_batches_tracked)."""
    own = dict(module.named_parameters())
    own.update(dict(module.named_buffers()))
    missing = [k for k in own if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in own and not any(k.startswith(p) for p in ignore)]
    if missing or unexpected:
        raise ValueError(f"{what}: {len(missing)} missing {missing[:6]}, {len(unexpected)} unexpected {unexpected[:6]}")
    with torch.no_grad():
        for k, t in tensors.items():
            if k in own:
                if tuple(own[k].shape) != tuple(t.shape):
                    raise ValueError(f"{what}: {k} has shape {tuple(t.shape)}, model expects {tuple(own[k].shape)}")
                own[k].copy_(t.to(own[k].dtype))


def prepare(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_adamw(params) -> torch.optim.AdamW:
    """The reference trainer's optimiser: AdamW, lr 1e-4, betas (0.9, 0.999), eps 1e-8, decay 1e-4."""
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-4)


def for_training(net: HVQ):
    """A trainable copy of a `prepare`d network in train mode (stacked-codebook caches dropped on
    both), its parameters and the reference optimiser over them: `(copy, params, optimiser)`."""
    net.invalidate()
    tnet = copy.deepcopy(net)
    tnet.invalidate()
    for p in tnet.parameters():
        p.requires_grad_(True)
    tnet.train()
    params = [p for p in tnet.parameters() if p.requires_grad]
    return tnet, params, reference_adamw(params)


def load_model_dir(path, lite0_weights=LITE0_WEIGHTS) -> Detector:
    """A model directory written by `hvq`: config.json + model.safetensors (official names,
    backbone under `enc.`; a Lite0 model may omit `enc.*`)."""
    path = Path(path)
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    if not cfg_path.is_file() or not w_path.is_file() or w_path.stat().st_size == 0:
        raise FileNotFoundError(f"{path}: no trained model here (need config.json and a non-empty model.safetensors)")
    saved = json.loads(cfg_path.read_text())
    if "model" not in saved:
        raise ValueError(f"{cfg_path}: no 'model' section")
    det = Detector(BackboneCfg.from_json(saved["model"]["backbone"]), HvqCfg.from_json(saved["model"]["hvq"]))
    tensors = load_tensors(w_path)
    enc = {k[4:]: v for k, v in tensors.items() if k.startswith("enc.")}
    rest = {k: v for k, v in tensors.items() if not k.startswith("enc.")}
    if not enc:
        if det.bcfg.kind != "efficientnet-lite0":
            raise ValueError(f"{w_path}: no backbone tensors (enc.*) for {det.bcfg.kind}")
        enc = load_tensors(lite0_weights)
    enc = {k: v for k, v in enc.items() if k.startswith(("_conv_stem", "_bn0", "_blocks."))
           and not (k.startswith("_blocks.") and int(k.split(".")[1]) >= len(det.enc._blocks))}
    load_module(det.enc, enc, f"{w_path} (backbone)")
    load_module(det.net, rest, f"{w_path} (network)")
    return det


def official_random(num_classes: int = 15) -> Detector:
    """The paper's full configuration with random weights (the `hvq bench --config official`
    model): EfficientNet-B4 (static padding for 380) + C = 256, K = 512, FFN 1024."""
    names = MVTEC_CLASSES[:num_classes] if num_classes <= 15 else [str(i) for i in range(num_classes)]
    return Detector(BackboneCfg.b4(), HvqCfg(num_classes=num_classes, class_names=names))
