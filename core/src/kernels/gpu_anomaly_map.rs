//! The anomaly map at feature resolution as one GPU kernel (CubeCL: wgpu, CUDA):
//! `‖rec − feature‖₂` over channels plus `weight ×` the OT score, per position.
//!
//! Composed it is six launches (difference, square, channel sum, square root, the OT term's scale
//! and the sum), plus a copy when the reconstruction is a channels-last view. Here one thread takes
//! one position and walks its channels at the inputs' own strides, with the composed form's f32
//! operations: `sqrt(Σ_c (r − f)²) + ot·weight`.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::gpu::{F32, grid, plain_f32, rows, to_burn};

#[cube(launch)]
fn anomaly_map_kernel<F: Float>(
    rec: &Tensor<F>,
    feature: &Tensor<F>,
    ot: &Tensor<F>,
    map: &mut Tensor<F>,
    weight: f32,
    #[comptime] with_ot: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = ABSOLUTE_POS;
    if i >= map.len() {
        terminate!();
    }
    // The map is `[n, 1, h, w]`, contiguous.
    let (height, width) = (map.shape(2), map.shape(3));
    let x = i % width;
    let y = (i / width) % height;
    let n = i / (width * height);
    let channels = rec.shape(1);
    let r_base = n * rec.stride(0) + y * rec.stride(2) + x * rec.stride(3);
    let f_base = n * feature.stride(0) + y * feature.stride(2) + x * feature.stride(3);
    let mut sum = F::new(0.0);
    for c in 0..channels {
        let gap = rec[r_base + c * rec.stride(1)] - feature[f_base + c * feature.stride(1)];
        sum += gap * gap;
    }
    let mut value = F::sqrt(sum);
    if with_ot {
        // The OT score's rows (one an image) may lie padded apart (CUDA's layout).
        value += ot[n * ot.stride(0) + y * width + x] * F::cast_from(weight);
    }
    map[i] = value;
}

/// [`super::anomaly_map`] on a GPU backend: `‖rec − feature‖₂` over the channels of
/// `[B, F, H, W]` tensors (any layout) plus `weight · ot` for the OT score `ot [B, H·W]`
/// (row-major over the grid), `[B, 1, H, W]`. `None` when an input is not a plain f32 tensor of
/// this process's GPU backend or the shapes disagree; the caller composes it. The OT score's
/// rows are read where they lie when evenly spaced (CUDA pads them apart), else copied first.
pub fn anomaly_map(
    rec: &BurnTensor<4>,
    feature: &BurnTensor<4>,
    ot: Option<&BurnTensor<2>>,
    weight: f32,
) -> Option<BurnTensor<4>> {
    let [b, _, h, w] = rec.dims();
    if feature.dims() != rec.dims() || ot.is_some_and(|ot| ot.dims() != [b, h * w]) {
        return None;
    }
    if b * h * w == 0 {
        return None;
    }
    let rec = plain_f32(rec.clone())?;
    let feature = plain_f32(feature.clone())?;
    let map = empty_device_contiguous_dtype(
        rec.client.clone(),
        rec.device.clone(),
        [b, 1, h, w].into(),
        rec.dtype,
    );
    // Without an OT term the kernel never reads it: the features (read-only, as the term would
    // be) stand in as the argument.
    let ot_arg = match ot {
        Some(ot) => rows(plain_f32(ot.clone())?).0,
        None => feature.clone(),
    };
    let (cube_count, cube_dim) = grid(&map, b * h * w);
    anomaly_map_kernel::launch(
        &map.client,
        cube_count,
        cube_dim,
        rec.into_tensor_arg(),
        feature.into_tensor_arg(),
        ot_arg.into_tensor_arg(),
        map.clone().into_tensor_arg(),
        weight,
        ot.is_some(),
        F32,
    );
    Some(to_burn(map))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::values;

    /// On wgpu, one launch against the map in f64 from the same values: the reconstruction a
    /// channels-last view (as the decoder leaves it) and the features contiguous, with and
    /// without the OT term, the term's rows contiguous or padded apart; within the channel sum's
    /// rounding and the square root's, plus the term's.
    #[test]
    fn one_kernel_gives_the_anomaly_map() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(3);
        let (b, f, h, w) = (2usize, 37usize, 5usize, 7usize);
        let rec = Tensor::<4>::random([b, h, w, f], Distribution::Normal(0.0, 1.0), &device)
            .permute([0, 3, 1, 2]);
        let feature = Tensor::<4>::random([b, f, h, w], Distribution::Normal(0.0, 1.0), &device);
        let ot = Tensor::<2>::random([b, h * w], Distribution::Uniform(0.0, 1.0), &device);
        let weight = 0.7f32;
        let (rv, fv, ov) = (
            values(rec.clone().permute([0, 2, 3, 1])),
            values(feature.clone()),
            values(ot.clone()),
        );
        // The OT score with rows padded apart (CUDA's layout of burn's outputs, NaN padding):
        // read in place, the same map.
        let padded_ot = crate::kernels::gpu::padded_rows(ot.clone());
        for (with_ot, ot) in [(true, &ot), (true, &padded_ot), (false, &ot)] {
            let ot = with_ot.then_some(ot);
            let _ = anomaly_map(&rec, &feature, ot, weight).unwrap();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("map");
            let got = anomaly_map(&rec, &feature, ot, weight).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            assert_eq!(got.dims(), [b, 1, h, w]);
            let got = values(got);
            let eps = 2f64.powi(-23);
            for n in 0..b {
                for p in 0..h * w {
                    let sum: f64 = (0..f)
                        .map(|c| {
                            let r = rv[(n * h * w + p) * f + c] as f64;
                            (r - fv[(n * f + c) * h * w + p] as f64).powi(2)
                        })
                        .sum();
                    let l2 = sum.sqrt();
                    let term = if with_ot {
                        ov[n * h * w + p] as f64 * weight as f64
                    } else {
                        0.0
                    };
                    let want = l2 + term;
                    let bound = ((f as f64 + 4.0) * l2 + 3.0 * term) * eps;
                    let g = got[n * h * w + p] as f64;
                    assert!((g - want).abs() <= bound, "[{n}, {p}]: {g} vs {want}");
                }
            }
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let on_cpu = Tensor::<4>::ones([1, 2, 3, 3], &cpu);
        assert!(anomaly_map(&on_cpu, &on_cpu, None, 1.0).is_none());
        let wrong_ot = Tensor::<2>::ones([2, 9], &device);
        assert!(anomaly_map(&rec, &feature, Some(&wrong_ot), 1.0).is_none());
        assert!(anomaly_map(&rec.clone().autodiff(), &feature, None, 1.0).is_none());
    }
}
