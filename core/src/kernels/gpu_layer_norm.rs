//! Layer norm over the last axis as one GPU kernel (CubeCL: wgpu, CUDA), for inference.
//!
//! burn's layer norm is nine kernels on a GPU backend (mean, subtract, square, mean, add ε,
//! square root, divide, scale, shift), each a launch and a pass; the transformer applies it some
//! twenty-five times a forward. Here one cube of 64 threads normalises one row (rows are a few
//! hundred values: the embedding width), in the composed form's operations; only the two sums
//! run in another order (each thread's share, then pairwise). One thread per row, as before
//! (2026-12-04), left a large GPU mostly idle: an H200 took 4.5 ms for the decoder's 13 norms at
//! batch 8, each thread walking its row alone.

use burn::tensor::Tensor as BurnTensor;
use cubecl::prelude::*;

use super::gpu::{
    F32, ROW_THREADS, cube_sum, empty_like, plain_f32, plain_f32_contiguous, row_cubes,
    row_of_cube, rows, to_burn,
};

/// One cube per row: each thread sums every `ROW_THREADS`-th value (neighbouring threads read
/// neighbouring values), the cube adds the partial sums pairwise in shared memory, for the mean
/// and then the squared deviations, and each thread writes its values. `x`'s rows lie `pitch`
/// values apart (CUDA pads the rows of burn's outputs), the output's `row` apart.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layer_norm_kernel<F: Float>(
    x: &Tensor<F>,
    gamma: &Tensor<F>,
    beta: &Tensor<F>,
    out: &mut Tensor<F>,
    rows: u32,
    row: u32,
    pitch: u32,
    eps: f32,
    #[define(F)] _dtype: ElemType,
) {
    let thread = UNIT_POS_X as usize;
    let (r, n) = row_of_cube(rows, row);
    let (from, base) = (r * pitch as usize, r * row as usize);
    let mut partial = Shared::<[F]>::new_slice(ROW_THREADS);
    let (mean, denom) = row_statistics::<F>(x, &mut partial, thread, from, n, row, eps);
    let mut j = thread;
    while j < n {
        out[base + j] = (x[from + j] - mean) / denom * gamma[j] + beta[j];
        j += ROW_THREADS;
    }
}

/// The mean of the `n` values of `x` from `base` and `√(var + ε)` (biased variance over
/// `row`, which `n` is, or 0 for a cube past the last row), summed by the whole cube: each
/// thread its every `ROW_THREADS`-th value, then [`cube_sum`]. The inference kernel and the
/// training forward (`gpu_layer_norm_autodiff`) normalise by it.
#[cube]
pub(super) fn row_statistics<F: Float>(
    x: &Tensor<F>,
    partial: &mut Shared<[F]>,
    thread: usize,
    base: usize,
    n: usize,
    row: u32,
    eps: f32,
) -> (F, F) {
    let mut sum = F::new(0.0);
    let mut j = thread;
    while j < n {
        sum += x[base + j];
        j += ROW_THREADS;
    }
    let mean = cube_sum::<F>(partial, thread, sum, ROW_THREADS) / F::cast_from(row);
    let mut squares = F::new(0.0);
    let mut j = thread;
    while j < n {
        let c = x[base + j] - mean;
        squares += c * c;
        j += ROW_THREADS;
    }
    let variance = cube_sum::<F>(partial, thread, squares, ROW_THREADS) / F::cast_from(row);
    (mean, F::sqrt(variance + F::cast_from(eps)))
}

/// `(x − mean)/√(var + ε)·γ + β` over the last axis of `x` in one launch, into a contiguous
/// tensor; `None` when the tensors are not plain f32 tensors of this process's GPU backend (or
/// the row is empty), and the caller composes it. Rows of `x` padded apart are read where they
/// lie; another layout is copied first.
pub fn layer_norm<const D: usize>(
    x: &BurnTensor<D>,
    gamma: &BurnTensor<1>,
    beta: &BurnTensor<1>,
    eps: f64,
) -> Option<BurnTensor<D>> {
    let row = x.dims()[D - 1];
    if row == 0 || gamma.dims() != [row] || beta.dims() != [row] {
        return None;
    }
    let (input, pitch) = rows(plain_f32(x.clone())?);
    let gamma = plain_f32_contiguous(gamma.clone())?;
    let beta = plain_f32_contiguous(beta.clone())?;
    let rows = input.meta.num_elements() / row;
    let out = empty_like(&input);
    let (cube_count, cube_dim) = row_cubes(&input, rows);
    layer_norm_kernel::launch(
        &out.client,
        cube_count,
        cube_dim,
        input.into_tensor_arg(),
        gamma.into_tensor_arg(),
        beta.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rows as u32,
        row as u32,
        pitch as u32,
        eps as f32,
        F32,
    );
    Some(to_burn(out))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::kernels::gpu::values;

    /// On wgpu, one launch against the f64 layer norm on the host: within f32 rounding of sums
    /// of `row` terms (row·2⁻²⁴ relative to the normalised value's size, times γ, plus β's
    /// rounding), for rows of 256 values offset far from zero (where a careless variance loses
    /// digits), the width of the default model (64) and rows narrower, wider and not a multiple
    /// of the cube's 64 threads (the decoder's 512), and more rows than one axis of cubes
    /// holds; burn's composed layer norm is held to
    /// the same bound. Rows padded apart are read in place, bit for bit; a transposed input is
    /// copied first. An autodiff tensor and a CPU one are left to the composed form.
    #[test]
    fn one_kernel_normalises_each_row() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        // Rows of a cube's width, narrower, wider and not a multiple of it (the decoder's 512).
        let shapes = [
            (37, 256, 50.0),
            (196, 64, 0.0),
            (5, 100, 3.0),
            (3, 24, 0.0),
            (2, 512, -20.0),
            // More rows than cubes along one axis (65,535): the launch spreads over two.
            (66_000, 6, 1.0),
        ];
        for (rows, row, offset) in shapes {
            let x =
                BurnTensor::<3>::random([1, rows, row], Distribution::Normal(offset, 2.0), &device);
            let gamma = BurnTensor::<1>::random([row], Distribution::Uniform(0.5, 1.5), &device);
            let beta = BurnTensor::<1>::random([row], Distribution::Uniform(-1.0, 1.0), &device);
            let _ = values(layer_norm(&x, &gamma, &beta, 1e-5).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("norm");
            let got = layer_norm(&x, &gamma, &beta, 1e-5).unwrap();
            let profile = profiler.finish();
            assert_eq!(profile.stages[0].launches, 1, "{profile:#?}");
            // Rows padded apart (CUDA's layout of burn's outputs): read in place, one launch,
            // the same values (the padding's NaNs never read).
            let padded = crate::kernels::gpu::padded_rows(x.clone());
            let _ = values(layer_norm(&padded, &gamma, &beta, 1e-5).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("norm");
            let from_padded = layer_norm(&padded, &gamma, &beta, 1e-5).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            assert_eq!(
                values(from_padded),
                values(got.clone()),
                "padded rows of {row}"
            );
            let composed = burn::tensor::module::layer_norm(
                x.clone(),
                gamma.clone(),
                Some(beta.clone()),
                1e-5,
            );
            let (xv, g, b) = (values(x), values(gamma), values(beta));
            for (name, out) in [("kernel", values(got)), ("composed", values(composed))] {
                for r in 0..rows {
                    let xs = &xv[r * row..(r + 1) * row];
                    let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / row as f64;
                    let var =
                        xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / row as f64;
                    let sd = (var + 1e-5).sqrt();
                    for j in 0..row {
                        let xhat = (xs[j] as f64 - mean) / sd;
                        let want = xhat * g[j] as f64 + b[j] as f64;
                        // The mean's error (row terms of size |x|) over σ, and the rest.
                        let bound = row as f64
                            * 2f64.powi(-24)
                            * ((xs[j] as f64).abs() / sd + xhat.abs() + 1.0)
                            * g[j].abs() as f64
                            + 4.0 * 2f64.powi(-24) * b[j].abs() as f64;
                        let got = out[r * row + j] as f64;
                        assert!(
                            (got - want).abs() <= bound,
                            "{name} [{r},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
        let x = BurnTensor::<2>::ones([4, 8], &device);
        let (g, b) = (
            BurnTensor::<1>::ones([8], &device),
            BurnTensor::<1>::zeros([8], &device),
        );
        assert!(layer_norm(&x.clone().autodiff(), &g, &b, 1e-5).is_none());
        assert!(layer_norm(&x, &g, &b, 1e-5).is_some());
        // Rows not evenly spaced: copied first, then the same kernel.
        let square = BurnTensor::<2>::random([8, 8], Distribution::Normal(0.0, 2.0), &device);
        let profiler = crate::device::kernel_profile::KernelProfiler::start("norm");
        let transposed = values(layer_norm(&square.clone().transpose(), &g, &b, 1e-5).unwrap());
        assert_eq!(profiler.finish().stages[0].launches, 2);
        let copied = square.transpose().reshape([64]).reshape([8, 8]);
        assert_eq!(
            transposed,
            values(layer_norm(&copied, &g, &b, 1e-5).unwrap())
        );
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let on_cpu = BurnTensor::<2>::ones([4, 8], &cpu);
        let (gc, bc) = (
            BurnTensor::<1>::ones([8], &cpu),
            BurnTensor::<1>::zeros([8], &cpu),
        );
        assert!(layer_norm(&on_cpu, &gc, &bc, 1e-5).is_none());
    }
}
