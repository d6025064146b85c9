//! The OT score's step after its dot products, as one GPU kernel (CubeCL: wgpu, CUDA), for
//! inference: per token, `Σ_k softmax_k(x·e_k / τ) · (1 − cos(x, e_k))`.
//!
//! Composed from burn's operations it is about a dozen launches over `[B, L, K]` tensors (the
//! token norms, the cosines' product and division, the scaled softmax, `1 − cos`, the product
//! and the sum). Here one thread takes one token and walks its row of dot products three times
//! (maximum, sum of exponentials, the weighted cost), with the composed form's f32 operations per
//! element: `x·e / τ`, `e^{l − max}`, `p = e / Σ`, `cos = x·e / (‖x‖·‖e‖)`, `p · ((−cos) + 1)`.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::gpu::{F32, grid, to_burn};
use super::gpu_nearest_code::{TokensAndCodes, squared_norm, tokens_and_codes};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ot_score_kernel<F: Float>(
    x: &Tensor<F>,
    dots: &Tensor<F>,
    code_norms: &Tensor<F>,
    scores: &mut Tensor<F>,
    tokens_per_sample: u32,
    dim: u32,
    code_count: u32,
    book_per_sample: u32,
    temperature: f32,
    zero_norm: f32,
    #[define(F)] _dtype: ElemType,
) {
    let token = ABSOLUTE_POS;
    if token >= scores.len() {
        terminate!();
    }
    let d = dim as usize;
    let k = code_count as usize;
    let book = (token / tokens_per_sample as usize) * book_per_sample as usize;
    let x_norm = F::max(
        F::sqrt(squared_norm(x, token * d, d)),
        F::cast_from(zero_norm),
    );
    let tau = F::cast_from(temperature);
    let dot_base = token * k;
    let norm_base = book * k;
    let mut max = dots[dot_base] / tau;
    for j in 1..k {
        max = F::max(max, dots[dot_base + j] / tau);
    }
    let mut total = F::new(0.0);
    for j in 0..k {
        total += F::exp(dots[dot_base + j] / tau - max);
    }
    let one = F::new(1.0);
    let mut score = F::new(0.0);
    for j in 0..k {
        let dot = dots[dot_base + j];
        let p = F::exp(dot / tau - max) / total;
        let cos = dot / (x_norm * code_norms[norm_base + j]);
        score += p * (-cos + one);
    }
    scores[token] = score;
}

/// [`super::ot_scores`] on a GPU backend: each token's OT score from the tokens `x [B, L, D]`,
/// their dot products `dots [B, L, K]` with their sample's prototypes and the prototypes' norms
/// `code_norms [G, K]` (already clamped to `zero_norm`; G = 1 shared, G = B one per sample), at
/// temperature `temperature`; token norms below `zero_norm` count as `zero_norm`. `None` when an
/// input is not a plain f32 tensor of this process's GPU backend (the norms also contiguous) or
/// the shapes disagree; the caller composes it.
pub fn ot_scores(
    x: &BurnTensor<3>,
    dots: &BurnTensor<3>,
    code_norms: &BurnTensor<2>,
    temperature: f32,
    zero_norm: f32,
) -> Option<BurnTensor<2>> {
    let TokensAndCodes {
        x: input,
        dots,
        per_code: code_norms,
        dims: [b, l, d, k],
        book_per_sample,
    } = tokens_and_codes(x, dots, code_norms)?;
    let scores = empty_device_contiguous_dtype(
        input.client.clone(),
        input.device.clone(),
        [b, l].into(),
        input.dtype,
    );
    let (cube_count, cube_dim) = grid(&input, b * l);
    ot_score_kernel::launch(
        &input.client,
        cube_count,
        cube_dim,
        input.clone().into_tensor_arg(),
        dots.into_tensor_arg(),
        code_norms.into_tensor_arg(),
        scores.clone().into_tensor_arg(),
        l as u32,
        d as u32,
        k as u32,
        u32::from(book_per_sample),
        temperature,
        zero_norm,
        F32,
    );
    Some(to_burn(scores))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor, TensorData};

    use crate::kernels::gpu::values;

    /// On wgpu, one launch against the score in f64 from the same dot products and norms, within
    /// the f32 rounding of each term (Vulkan's `exp`: 3 + 2·|argument| ulp; the exponentials' sum
    /// over K; the token norm's over D; `1 − cos` where the cosine is near 1) plus the sum's. A
    /// codebook shared by every sample and one per sample, temperatures K and 1; a zero token
    /// (its norm clamped) and a zero prototype.
    #[test]
    fn one_kernel_gives_each_tokens_ot_score() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(9);
        let zero_norm = 1e-8f32;
        for (b, l, d, k, g, tau) in [
            (3usize, 19usize, 40usize, 33usize, 1usize, 33f32),
            (2, 7, 5, 9, 2, 1.0),
        ] {
            let mut xv = values(Tensor::<3>::random(
                [b, l, d],
                Distribution::Normal(0.0, 1.0),
                &device,
            ));
            xv[..d].fill(0.0);
            let mut ev = values(Tensor::<3>::random(
                [g, d, k],
                Distribution::Normal(0.0, 1.0),
                &device,
            ));
            for i in 0..d {
                ev[i * k + 1] = 0.0;
            }
            let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [b, l, d]), &device);
            let columns = Tensor::<3>::from_data(TensorData::new(ev, [g, d, k]), &device);
            let norms = columns
                .clone()
                .powi_scalar(2)
                .sum_dim(1)
                .sqrt()
                .clamp_min(zero_norm as f64)
                .reshape([g, k]);
            let per_sample = if g == 1 {
                columns.expand([b, d, k])
            } else {
                columns
            };
            let dots = crate::kernels::products::matmul(x.clone(), per_sample);
            let _ = ot_scores(&x, &dots, &norms, tau, zero_norm).unwrap();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("ot");
            let got = ot_scores(&x, &dots, &norms, tau, zero_norm).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            let (dv, nv, got) = (values(dots), values(norms), values(got));
            let eps = 2f64.powi(-23);
            for t in 0..b * l {
                let book = if g == 1 { 0 } else { t / l };
                let x_norm = xv[t * d..(t + 1) * d]
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(zero_norm as f64);
                let logits: Vec<f64> = (0..k).map(|j| dv[t * k + j] as f64 / tau as f64).collect();
                let max = logits.iter().cloned().fold(f64::MIN, f64::max);
                let total: f64 = logits.iter().map(|l| (l - max).exp()).sum();
                let (mut want, mut bound) = (0.0, 0.0);
                for j in 0..k {
                    let p = (logits[j] - max).exp() / total;
                    let cos = dv[t * k + j] as f64 / (x_norm * nv[book * k + j] as f64);
                    want += p * (1.0 - cos);
                    let arg = (logits[j] - max).abs();
                    bound += p
                        * ((1.0 - cos).abs() * (3.0 + 2.0 * arg + k as f64 + 6.0)
                            + cos.abs() * (d as f64 + 6.0));
                }
                let bound = (bound + k as f64 * want.abs()) * eps + 1e-30;
                let g = got[t] as f64;
                assert!(
                    (g - want).abs() <= bound,
                    "token {t}: {g} vs {want} (bound {bound})"
                );
                if t == 0 {
                    // A zero token: every cosine 0, the score the plan's total, 1.
                    assert!((g - 1.0).abs() <= bound, "zero token: {g}");
                }
            }
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let ones = |shape: [usize; 3], device| Tensor::<3>::ones(shape, device);
        let norms = Tensor::<2>::ones([1, 5], &cpu);
        assert!(
            ot_scores(
                &ones([2, 3, 4], &cpu),
                &ones([2, 3, 5], &cpu),
                &norms,
                5.0,
                zero_norm
            )
            .is_none()
        );
        let norms = Tensor::<2>::ones([1, 5], &device);
        let x = ones([2, 3, 4], &device);
        assert!(
            ot_scores(
                &x.clone().autodiff(),
                &ones([2, 3, 5], &device),
                &norms,
                5.0,
                zero_norm
            )
            .is_none()
        );
        assert!(ot_scores(&x, &ones([2, 3, 6], &device), &norms, 5.0, zero_norm).is_none());
    }
}
