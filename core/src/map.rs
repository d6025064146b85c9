//! From reconstruction to anomaly map and image score, as the official evaluation does it.

use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, interpolate};
use burn::tensor::ops::{AvgPoolOptions, InterpolateMode, InterpolateOptions};
use serde::{Deserialize, Serialize};

/// The anomaly map at feature resolution, `[B, 1, H, W]`: [`l2_map`] of the reconstruction plus
/// `weight ×` the OT score (`[B, L]`, row-major over the grid) when there is one
/// ([`total_map`]). One kernel on a GPU backend, burn's operations elsewhere.
pub fn anomaly_map(
    rec: Tensor<4>,
    feature: Tensor<4>,
    ot: Option<Tensor<2>>,
    weight: f32,
) -> Tensor<4> {
    if let Some(map) = crate::kernels::anomaly_map(&rec, &feature, ot.as_ref(), weight) {
        return map;
    }
    total_map(l2_map(rec, feature), ot, weight)
}

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
///
/// The box average is separable: a `1×pool` pass then a `pool×1` pass give the same means with
/// 2·pool additions per output instead of pool² (16×16 on a 224² map: 3× faster on the CPU;
/// the results agree with the direct pooling to float rounding, ~1e-7 relative).
pub fn image_score(map: Tensor<4>, pool: usize) -> Tensor<1> {
    let rows = avg_pool2d(map, AvgPoolOptions::new([1, pool]).with_stride([1, 1]));
    let pooled = avg_pool2d(rows, AvgPoolOptions::new([pool, 1]).with_stride([1, 1]));
    crate::kernels::row_max(pooled.flatten::<2>(1, 3))
}

/// How an anomaly map becomes an image score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScoreKind {
    /// Maximum of the (pooled) anomaly map: defects are small and local (MVTec-like, ELPV).
    Max,
    /// Mean of the anomaly map: a semantic anomaly changes the whole image (cifar10,
    /// fashion-mnist), as UniAD scores CIFAR-10.
    Mean,
}

/// Image score as the mean of the map (UniAD's choice for semantic datasets such as CIFAR-10).
pub fn mean_score(map: Tensor<4>) -> Tensor<1> {
    let [b, _, _, _] = map.dims();
    map.flatten::<2>(1, 3).mean_dim(1).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// The score against the direct definition in f64: every valid `pool`×`pool` window's mean,
    /// the maximum per image (non-square map, windows at the borders included), on the CPU and
    /// on wgpu (the maximum there a kernel of its own), at a small map and at the official
    /// 224² with 16×16 windows (whose 209² window means are more than one cube's chunk).
    #[test]
    fn image_score_is_the_largest_window_mean() {
        let _generator = crate::test_rng::lock();
        #[cfg_attr(not(feature = "wgpu"), allow(unused_mut))] // wgpu's device is pushed below
        let mut devices = vec![Device::flex()];
        #[cfg(feature = "wgpu")]
        devices.push(crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap());
        for device in devices {
            for (b, h, w, pool) in [(2, 23, 19, 5), (3, 224, 224, 16)] {
                largest_window_mean_on(&device, b, h, w, pool);
            }
        }
    }

    fn largest_window_mean_on(device: &Device, b: usize, h: usize, w: usize, pool: usize) {
        let vals: Vec<f32> = (0..b * h * w)
            .map(|i| ((i * 7919) % 1009) as f32 / 10.0 - 30.0)
            .collect();
        let map = Tensor::<4>::from_data(TensorData::new(vals.clone(), [b, 1, h, w]), device);
        let got = crate::device::read_back(image_score(map, pool)).unwrap();
        for (s, g) in got.iter().enumerate() {
            let mut best = f64::MIN;
            for y in 0..=h - pool {
                for x in 0..=w - pool {
                    let sum: f64 = (0..pool * pool)
                        .map(|i| vals[s * h * w + (y + i / pool) * w + x + i % pool] as f64)
                        .sum();
                    best = best.max(sum / (pool * pool) as f64);
                }
            }
            assert!(
                (*g as f64 - best).abs() <= 1e-5 * best.abs().max(1.0),
                "image {s}: {g} vs {best}"
            );
        }
    }
}
