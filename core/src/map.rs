//! From reconstruction to anomaly map and image score, as the official evaluation does it.

use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, interpolate};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions};

/// `‖rec − feature‖₂` over channels, `[B, F, H, W]` → `[B, 1, H, W]`.
pub fn l2_map(rec: Tensor<4>, feature: Tensor<4>) -> Tensor<4> {
    (rec - feature).powi_scalar(2).sum_dim(1).sqrt()
}

/// L2 map plus `weight ×` the OT score (`[B, L]`, row-major over the grid).
pub fn total_map(l2: Tensor<4>, ot: Option<Tensor<2>>, weight: f32) -> Tensor<4> {
    match ot {
        Some(ot) => {
            let [b, _, h, w] = l2.dims();
            l2 + ot.reshape([b, 1, h, w]).mul_scalar(weight as f64)
        }
        None => l2,
    }
}

/// Bilinear `align_corners=True` resize of a map to `size`×`size` (×16 for 14 → 224).
pub fn upsample(map: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    interpolate(
        map,
        InterpolateOptions::new(InterpolateMode::Bilinear)
            .with_align_corners(true)
            .with_output_size(size),
    )
}

/// Image score: max of the map after `pool`×`pool` average pooling with stride 1 (valid), `[B]`.
pub fn image_score(map: Tensor<4>, pool: usize) -> Tensor<1> {
    let [b, _, _, _] = map.dims();
    let pooled = avg_pool2d(map, AvgPoolOptions::new([pool, pool]).with_stride([1, 1]));
    pooled.flatten::<2>(1, 3).max_dim(1).reshape([b])
}

/// Image score as the mean of the map (UniAD's choice for semantic datasets such as CIFAR-10).
pub fn mean_score(map: Tensor<4>) -> Tensor<1> {
    let [b, _, _, _] = map.dims();
    map.flatten::<2>(1, 3).mean_dim(1).reshape([b])
}
