//! Transport between tokens and a class's prototypes (codebook entries).
//!
//! * The OT score of the released code, a one-sided conditional transport from each level-1
//!   token to the prototypes: `ot(x) = Σ_k softmax_k(x·e_k / τ) · (1 − cos(x, e_k))`, τ = K.
//! * The POT loss of the paper (not released): our reading is the two-sided conditional
//!   transport of `docs/hvq-trans.md` §4, with cost `1 − cos`, forward plan `softmax_k(x·e/τ)`,
//!   backward plan `softmax_n(x·e/τ)`: `L = mean_n Σ_k π→ c + mean_k Σ_n π← c`. Its τ defaults to
//!   K as well (configurable), so both transports see the same plan sharpness. In training on
//!   a GPU it is one autodiff operation (`kernels::pot_loss_trained`), tested against the
//!   composed form here and against the definition in f64 (`tests/paper.rs`).

use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use super::batch_codes::BatchCodes;

/// Vectors shorter than this count as zero vectors, whose cosine with anything is 0 (as in
/// scikit-learn's `cosine_similarity` and PyTorch's, whose eps is the same). Codebook entries
/// that no token selects decay towards 0 under the EMA, to ~1e-20 per component: their squares
/// are subnormal, so `x·e / (‖x‖‖e‖)` becomes rounding noise (cosines of ±60 were seen) that
/// differs between backends that keep subnormals (CPU, lavapipe) and those that flush them to
/// zero (SwiftShader's WebGPU). With the norms clamped, such entries get cosine ≈ 0 everywhere;
/// vectors of ordinary length are unaffected.
const ZERO_NORM: f64 = 1e-8;

/// The prototypes' norms, clamped, `[G, 1, K]`.
fn prototype_norms(codes: &BatchCodes) -> Tensor<3> {
    codes.norms().clamp_min(ZERO_NORM)
}

/// Cosines `[B, L, K]` from the tokens `x`, their dot products and the prototypes' norms.
fn cosines(x: Tensor<3>, dots: Tensor<3>, e_norm: Tensor<3>) -> Tensor<3> {
    let [b, l, k] = dots.dims();
    let x_norm = x.powi_scalar(2).sum_dim(2).sqrt().clamp_min(ZERO_NORM); // [B, L, 1]
    dots / (x_norm.expand([b, l, k]) * e_norm.expand([b, l, k]))
}

/// OT score per token: `x [B, L, D]` against each sample's prototypes (its level-1 codebook)
/// → `[B, L]`.
///
/// The softmax is the stable (max-subtracted) one; the reference's plain `exp` is mathematically
/// equal.
pub fn ot_score(x: Tensor<3>, codes: &BatchCodes, temperature: f32) -> Tensor<2> {
    let [b, l, _] = x.dims();
    let dots = codes.dots(x.clone());
    let e_norm = prototype_norms(codes);
    // On a GPU at inference everything after the product is one kernel, the same operations.
    let [g, _, k] = e_norm.dims();
    let norms = e_norm.clone().reshape([g, k]);
    if let Some(scores) =
        crate::kernels::ot_scores(&x, &dots, &norms, temperature, ZERO_NORM as f32)
    {
        return scores;
    }
    let cos = cosines(x, dots.clone(), e_norm);
    let p = crate::kernels::softmax_last(dots.div_scalar(temperature as f64));
    (p * cos.neg().add_scalar(1.0)).sum_dim(2).reshape([b, l])
}

/// POT loss per sample, `[B]`, for tokens `x [B, L, D]` (gradient flows into x) and the
/// prototypes `embeds [B, D, K]` of each sample's class (constants: codebooks follow the EMA).
pub fn pot_loss(x: Tensor<3>, embeds: Tensor<3>, temperature: f32) -> Tensor<1> {
    // In training on a GPU, one autodiff operation: the same terms in four launches forward and
    // four backward instead of some 80.
    if let Some(loss) = crate::kernels::pot_loss_trained(&x, &embeds, temperature, ZERO_NORM as f32)
    {
        return loss;
    }
    pot_loss_composed(x, embeds, temperature)
}

/// [`pot_loss`] from burn's operations (every backend; the reference for the GPU operation).
fn pot_loss_composed(x: Tensor<3>, embeds: Tensor<3>, temperature: f32) -> Tensor<1> {
    let [b, _, _] = x.dims();
    // The prototypes as columns are all this needs: `BatchCodes` would also copy them into rows
    // and square their norms for the VQ's search, per level and step.
    let embeds = embeds.detach();
    let dots = crate::kernels::products::matmul(x.clone(), embeds.clone());
    let e_norm = embeds.powi_scalar(2).sum_dim(1).sqrt().clamp_min(ZERO_NORM); // [B, 1, K]
    let cos = cosines(x, dots.clone(), e_norm);
    let logits = dots.div_scalar(temperature as f64);
    let cost = cos.neg().add_scalar(1.0);
    let forward = softmax(logits.clone(), 2); // π→(k|n): each token spreads over prototypes
    let backward = softmax(logits, 1); // π←(n|k): each prototype spreads over tokens
    let to_prototypes = (forward * cost.clone()).sum_dim(2).mean_dim(1); // [B, 1, 1]
    let to_tokens = (backward * cost).sum_dim(1).mean_dim(2); // [B, 1, 1]
    (to_prototypes + to_tokens).reshape([b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// The OT score in f64 from its definition, with vectors shorter than `ZERO_NORM` taken as
    /// zero vectors (cosine 0).
    fn reference(x: &[f64], e: &[f64], l: usize, d: usize, k: usize, tau: f64) -> Vec<f64> {
        let dot = |n: usize, j: usize| (0..d).map(|i| x[n * d + i] * e[i * k + j]).sum::<f64>();
        let xn = |n: usize| (0..d).map(|i| x[n * d + i].powi(2)).sum::<f64>().sqrt();
        let en = |j: usize| (0..d).map(|i| e[i * k + j].powi(2)).sum::<f64>().sqrt();
        let cos = |n: usize, j: usize| {
            if xn(n) < ZERO_NORM || en(j) < ZERO_NORM {
                0.0
            } else {
                dot(n, j) / (xn(n) * en(j))
            }
        };
        (0..l)
            .map(|n| {
                let z: f64 = (0..k).map(|j| (dot(n, j) / tau).exp()).sum();
                (0..k)
                    .map(|j| (dot(n, j) / tau).exp() / z * (1.0 - cos(n, j)))
                    .sum()
            })
            .collect()
    }

    #[test]
    fn ot_score_treats_decayed_codes_as_zero_vectors() {
        let _generator = crate::test_rng::lock();
        // Codes 0–2 ordinary; code 3 decayed to 1e-20 per component (subnormal squares), code 4
        // exactly zero; token 2 is short, so the plan is spread over every code.
        let (l, d, k, tau) = (3, 4, 5, 5.0);
        let xs: Vec<f32> = vec![
            3.0, -1.0, 2.0, 0.5, //
            -2.0, 4.0, 1.0, -1.0, //
            0.01, 0.02, -0.01, 0.0,
        ];
        let mut es = vec![0.0f32; d * k];
        for i in 0..d {
            es[i * k] = [1.0, 2.0, -1.0, 0.5][i];
            es[i * k + 1] = [-1.5, 0.5, 2.0, 1.0][i];
            es[i * k + 2] = [0.3, -0.7, 0.2, 2.5][i];
            es[i * k + 3] = [1e-20, -3e-20, 2e-20, 1e-20][i];
        }
        let device = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [1, l, d]), &device);
        let e = Tensor::<3>::from_data(TensorData::new(es.clone(), [1, d, k]), &device);
        let got = crate::device::read_back(ot_score(x, &BatchCodes::from_columns(e), tau as f32))
            .unwrap();
        let f = |v: &[f32]| v.iter().map(|&a| a as f64).collect::<Vec<_>>();
        let want = reference(&f(&xs), &f(&es), l, d, k, tau);
        for (n, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((*g as f64 - w).abs() < 1e-5, "token {n}: {g} vs {w}");
        }
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod gpu_tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    use crate::kernels::relative;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        crate::device::read_back(t).unwrap()
    }

    /// On wgpu, the GPU operation's loss and `x`'s gradient (`kernels::gpu_pot_loss`) against
    /// the composed form under autodiff (burn's operations), with an upstream gradient
    /// that differs per sample: prototypes one per sample and one shared (a broadcast view);
    /// temperatures K and 1 (sharp plans); a short token (norm below the clamp, so no gradient
    /// through its norm), a decayed prototype (subnormal squares) and a zero one; L = 37 and
    /// K = 19 not multiples of anything. The sums run in other orders: within 2e-6 of the
    /// largest value (a few f32 roundings of sums of 37 terms), token by token for the gradient,
    /// plus four times the exponentials' error bound at the largest logit (Vulkan's `exp`:
    /// 3 + 2·|x| ulp; the plan enters the gradient through differences `c − r` that cancel).
    /// Measured on lavapipe: 4.1e-7 at τ = K, 9.5e-6 at τ = 1 (logits up to 18.7; bound 2.1e-5).
    #[test]
    fn one_operation_matches_the_composed_loss_and_gradient() {
        let plain: Device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let device = plain.clone().autodiff();
        let _generator = crate::test_rng::lock();
        plain.seed(23);
        let (b, l, d, k) = (3usize, 37usize, 24usize, 19usize);
        let zero_norm = ZERO_NORM as f32;
        let random = |shape: [usize; 3]| {
            values(Tensor::<3>::random(
                shape,
                Distribution::Normal(0.0, 1.0),
                &plain,
            ))
        };
        let mut xv = random([b, l, d]);
        for v in &mut xv[5 * d..6 * d] {
            *v *= 1e-10;
        }
        for (shared, tau) in [(false, k as f32), (true, k as f32), (false, 1.0)] {
            let g = if shared { 1 } else { b };
            let mut ev = random([g, d, k]);
            for i in 0..d {
                ev[i * k + 2] = 1e-20 * (i as f32 - 7.0);
                ev[i * k + 5] = 0.0;
            }
            let ev_at = |ev: &[f32], book: usize, i: usize, j: usize| ev[(book * d + i) * k + j];
            let columns = Tensor::<3>::from_data(TensorData::new(ev.clone(), [g, d, k]), &plain);
            let embeds = columns.expand([b, d, k]);
            let upstream =
                Tensor::<1>::from_data(TensorData::new(vec![1.0f32, -0.5, 2.0], [b]), &plain);
            let run = |fused: bool| {
                let x = Tensor::<3>::from_data(TensorData::new(xv.clone(), [b, l, d]), &device)
                    .require_grad();
                let loss = if fused {
                    crate::kernels::pot_loss_trained(&x, &embeds, tau, zero_norm)
                        .expect("the operation")
                } else {
                    pot_loss_composed(x.clone(), embeds.clone(), tau)
                };
                let grads = (loss.clone() * upstream.clone().autodiff())
                    .sum()
                    .backward();
                (values(loss.inner()), values(x.grad(&grads).unwrap()))
            };
            // τ = 1 leaves the logits as large as the dot products.
            let max_logit = (0..b * l * k)
                .map(|at| {
                    let (token, j) = (at / k, at % k);
                    let book = if shared { 0 } else { token / l };
                    (0..d)
                        .map(|i| xv[token * d + i] * ev_at(&ev, book, i, j))
                        .sum::<f32>()
                        .abs()
                        / tau
                })
                .fold(0f32, f32::max);
            let tolerance = 2e-6 + 4.0 * (3.0 + 2.0 * max_logit) * f32::EPSILON;
            let ((loss, dx), (want_loss, want_dx)) = (run(true), run(false));
            let gap = relative(loss, want_loss);
            assert!(gap < tolerance, "shared {shared}, τ {tau}: loss {gap}");
            assert!(want_dx.iter().all(|v| v.is_finite()));
            // Token by token: the short token's gradient (through the clamped norm, 1e-8) is
            // some 1e8 times the others' and would hide them in one scale.
            for (n, (got, want)) in dx.chunks(d).zip(want_dx.chunks(d)).enumerate() {
                let gap = relative(got.to_vec(), want.to_vec());
                assert!(
                    gap < tolerance,
                    "shared {shared}, τ {tau}: ∂x of token {n}: {gap} (tolerance {tolerance})"
                );
            }
        }
    }
}
