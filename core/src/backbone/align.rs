//! Feature alignment: each tapped map is resized to the token grid with bilinear
//! `align_corners=True` (as `nn.UpsamplingBilinear2d` does) and the maps are concatenated.

use burn::tensor::Tensor;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Resize every map to `size`×`size` (bilinear, align corners) and concatenate on channels.
///
/// Shapes: each input `[B, C_i, H_i, W_i]` → `[B, ΣC_i, size, size]`.
pub fn align_features(taps: Vec<Tensor<4>>, size: usize) -> Tensor<4> {
    let resized = taps
        .into_iter()
        .map(|t| {
            let [_, _, h, w] = t.dims();
            if h == size && w == size {
                t
            } else {
                interpolate(
                    t,
                    InterpolateOptions::new(InterpolateMode::Bilinear)
                        .with_align_corners(true)
                        .with_output_size([size, size]),
                )
            }
        })
        .collect();
    Tensor::cat(resized, 1)
}
