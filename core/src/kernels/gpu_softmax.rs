//! Softmax over the last axis as one GPU kernel (CubeCL: wgpu, CUDA), for inference.
//!
//! burn's softmax is five kernels on a GPU backend (maximum, subtract, `exp`, sum, divide), plus
//! one more when the scores are scaled first; attention takes one per layer and the OT score one.
//! Here one thread handles one row (a row is as long as the sequence: 196 positions), with the
//! scale applied inside: `softmax(s·x)_j = e^{s(x_j − max x)} / Σ_k e^{s(x_k − max x)}` for s > 0.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{F32, empty_like, grid, plain_f32, to_burn};

/// `x`'s rows lie `pitch` values apart (CUDA pads burn's rows), the output's `row` apart.
#[cube(launch)]
fn softmax_kernel<F: Float>(
    x: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    row: u32,
    pitch: u32,
    scale: f32,
    #[define(F)] _dtype: ElemType,
) {
    let r = ABSOLUTE_POS;
    if r >= rows as usize {
        terminate!();
    }
    let n = row as usize;
    let (base, from) = (r * n, r * pitch as usize);
    let s = F::cast_from(scale);
    let mut max = x[from];
    for j in 1..n {
        max = F::max(max, x[from + j]);
    }
    let mut sum = F::new(0.0);
    for j in 0..n {
        let e = F::exp((x[from + j] - max) * s);
        out[base + j] = e;
        sum += e;
    }
    for j in 0..n {
        out[base + j] /= sum;
    }
}

/// `softmax(scale · x)` over the last axis in one launch (`scale > 0`), into a contiguous
/// tensor; `None` when `x` is not a plain f32 tensor of this process's GPU backend (or its rows
/// are empty), and the caller composes it. Rows padded apart are read where they lie; another
/// layout is copied first.
pub fn softmax<const D: usize>(x: &BurnTensor<D>, scale: f32) -> Option<BurnTensor<D>> {
    let row = x.dims()[D - 1];
    if row == 0 {
        return None;
    }
    Some(to_burn(launch(plain_f32(x.clone())?, row, scale)))
}

/// The kernel on an f32 tensor with rows of `row` values (its last axis), into a new contiguous
/// one.
pub(super) fn launch(input: CubeTensor, row: usize, scale: f32) -> CubeTensor {
    let (input, pitch) = super::gpu::rows(input);
    let rows = input.meta.num_elements() / row;
    let out = empty_like(&input);
    let (cube_count, cube_dim) = grid(&input, rows);
    softmax_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        input.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        row as u32,
        pitch as u32,
        scale,
        F32,
    );
    out
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::kernels::gpu::values;

    /// On wgpu, one launch against the f64 softmax of the scaled rows: within Vulkan's `exp`
    /// error (3 + 2·|argument| units in the last place, arguments here ≤ 0 and down to about
    /// −40) plus a row-length's worth of rounding in the sum, relative to each value; rows of
    /// 196 (attention) and 7, scales 1 and 1/16, contiguous and padded apart (as CUDA allocates
    /// burn's products: read in place, the padding's NaNs never). The rows sum to 1.
    #[test]
    fn one_kernel_gives_each_rows_softmax() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        for (rows, row, scale, padded) in [
            (24usize, 196usize, 0.0625f32, false),
            (10, 7, 1.0, false),
            (24, 196, 0.0625, true),
            (10, 7, 1.0, true),
        ] {
            let mut x = BurnTensor::<3>::random(
                [2, rows / 2, row],
                Distribution::Normal(0.0, 8.0),
                &device,
            );
            if padded {
                x = crate::kernels::gpu::padded_rows(x);
            }
            let _ = values(softmax(&x, scale).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("softmax");
            let got = softmax(&x, scale).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            let (xv, gv) = (values(x), values(got));
            for r in 0..rows {
                let xs = &xv[r * row..(r + 1) * row];
                let max = xs.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                let e: Vec<f64> = xs
                    .iter()
                    .map(|&v| ((v as f64 - max) * scale as f64).exp())
                    .collect();
                let total: f64 = e.iter().sum();
                let mut sum = 0.0;
                for j in 0..row {
                    let want = e[j] / total;
                    let arg = ((xs[j] as f64 - max) * scale as f64).abs();
                    let bound =
                        (3.0 + 2.0 * arg + row as f64 + 2.0) * 2f64.powi(-23) * want + 1e-30;
                    let g = gv[r * row + j] as f64;
                    assert!((g - want).abs() <= bound, "[{r},{j}]: {g} vs {want}");
                    sum += g;
                }
                assert!(
                    (sum - 1.0).abs() <= row as f64 * 2f64.powi(-22),
                    "row {r} sums to {sum}"
                );
            }
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        assert!(softmax(&BurnTensor::<2>::ones([2, 3], &cpu), 1.0).is_none());
        // Rows not contiguous: copied first, then the same kernel.
        let on_gpu = BurnTensor::<2>::random([3, 5], Distribution::Normal(0.0, 8.0), &device);
        let profiler = crate::device::kernel_profile::KernelProfiler::start("softmax");
        let transposed = values(softmax(&on_gpu.clone().transpose(), 1.0).unwrap());
        assert_eq!(profiler.finish().stages[0].launches, 2);
        let copied = on_gpu.clone().transpose().reshape([15]).reshape([5, 3]);
        assert_eq!(transposed, values(softmax(&copied, 1.0).unwrap()));
        assert!(softmax(&on_gpu.autodiff(), 1.0).is_none());
    }
}
