//! EfficientNet's block table per variant (B4, Lite0): the architecture as data, which the
//! configuration checks taps against and the backbone builds its blocks from.

use super::BackboneKind;

/// Geometry of one MBConv block, derived from the architecture (not stored in weights).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockSpec {
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Expand ratio (1 = no expansion conv).
    pub expand: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Squeeze-excitation width, if the block has SE.
    pub se_ch: Option<usize>,
}

impl BlockSpec {
    /// Channels after the expansion conv.
    pub fn expanded(&self) -> usize {
        self.in_ch * self.expand
    }
}

/// The B0 stage table: (repeats, kernel, stride, expand, in, out).
const B0_STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Width/depth multipliers and options of each variant.
struct Variant {
    width: f64,
    depth: f64,
    se: bool,
}

fn variant(kind: BackboneKind) -> Variant {
    match kind {
        BackboneKind::EfficientnetB4 => Variant {
            width: 1.4,
            depth: 1.8,
            se: true,
        },
        BackboneKind::EfficientnetLite0 => Variant {
            width: 1.0,
            depth: 1.0,
            se: false,
        },
    }
}

/// lukemelas `round_filters`: scale, round to a multiple of 8, never drop more than 10 %.
fn round_filters(filters: usize, width: f64) -> usize {
    let f = filters as f64 * width;
    let mut new = ((f + 4.0) as usize / 8 * 8).max(8);
    if (new as f64) < 0.9 * f {
        new += 8;
    }
    new
}

/// Stem output channels.
pub fn stem_channels(kind: BackboneKind) -> usize {
    round_filters(32, variant(kind).width)
}

/// Every MBConv block of the variant, in order.
pub fn block_specs(kind: BackboneKind) -> Vec<BlockSpec> {
    let v = variant(kind);
    let mut out = Vec::new();
    for (repeats, kernel, stride, expand, cin, cout) in B0_STAGES {
        let cin = round_filters(cin, v.width);
        let cout = round_filters(cout, v.width);
        let repeats = (v.depth * repeats as f64).ceil() as usize;
        for r in 0..repeats {
            let in_ch = if r == 0 { cin } else { cout };
            out.push(BlockSpec {
                in_ch,
                out_ch: cout,
                expand,
                kernel,
                stride: if r == 0 { stride } else { 1 },
                // SE width is a quarter of the block's *input* channels.
                se_ch: v.se.then(|| ((in_ch as f64 * 0.25) as usize).max(1)),
            });
        }
    }
    out
}
