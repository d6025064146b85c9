//! The codebooks' EMA step in training as two GPU kernels (CubeCL: wgpu, CUDA).
//!
//! Composed from burn's operations one step (`model::quantizer::ema_update`) is about thirty
//! launches per level and batch round: the one-hot of the chosen codes (a fill, a scatter and
//! its checks), its sums, the assigned tokens' sums as a `[D, L] × [L, K]` product of the
//! one-hot, the two decays (four scalar products, two additions), the Laplace smoothing (two
//! scalar additions, a division, a product) and the normalisation (a division); with five levels
//! that was 150 of the training forward's 470 launches. Here:
//!
//! - [`decay`]: one thread per (codebook, row, code) of `embed_avg`, plus one row of threads for
//!   `cluster_size`: each walks the codebook's tokens in order and sums the ones assigned to its
//!   code (their `d`-th component, or 1 for the count), then decays the old value by the same
//!   two f32 products and addition as the composed `old·keep + sum·add`. The sum runs in token
//!   order where the product's tiles may group it otherwise: the same value to float rounding
//!   (adding the product's `x·0` terms changes nothing).
//! - [`normalise`]: one thread per element of the new codes, `embed_avg / ((c + ε)/(n + K·ε)·n)`
//!   in the composed form's order, from the counts `c` and their total `n` (burn's sum, one
//!   launch between the two kernels, so a dead-code restart can still change the counts there).

use burn::tensor::{Int, Tensor as BurnTensor};
use burn_cubecl::CubeBackend;
use cubecl::prelude::*;

use super::gpu::{F32, contiguous, empty_like, grid, index_type, plain_f32_contiguous, to_burn};

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ema_decay_kernel<F: Float, I: Numeric>(
    x: &Tensor<F>,
    indices: &Tensor<I>,
    cluster_old: &Tensor<F>,
    avg_old: &Tensor<F>,
    cluster: &mut Tensor<F>,
    avg: &mut Tensor<F>,
    tokens: u32,
    dim: u32,
    codes: u32,
    keep: f32,
    add: f32,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let l = tokens as usize;
    let d = dim as usize;
    let k = codes as usize;
    // Rows 0..D of a codebook's block are `embed_avg`'s, row D its counts.
    let block = (d + 1) * k;
    if ABSOLUTE_POS >= cluster_old.len() / k * block {
        terminate!();
    }
    let book = ABSOLUTE_POS / block;
    let row = (ABSOLUTE_POS % block) / k;
    let code = ABSOLUTE_POS % k;
    let wanted = I::cast_from(code as u32);
    let token_base = book * l;
    let mut sum = F::new(0.0);
    if row < d {
        for t in 0..l {
            if indices[token_base + t] == wanted {
                sum += x[(token_base + t) * d + row];
            }
        }
        let at = (book * d + row) * k + code;
        avg[at] = avg_old[at] * F::cast_from(keep) + sum * F::cast_from(add);
    } else {
        for t in 0..l {
            if indices[token_base + t] == wanted {
                sum += F::new(1.0);
            }
        }
        let at = book * k + code;
        cluster[at] = cluster_old[at] * F::cast_from(keep) + sum * F::cast_from(add);
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn ema_normalise_kernel<F: Float>(
    avg: &Tensor<F>,
    cluster: &Tensor<F>,
    total: &Tensor<F>,
    embed: &mut Tensor<F>,
    dim: u32,
    codes: u32,
    eps: f32,
    codes_eps: f32,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= avg.len() {
        terminate!();
    }
    let k = codes as usize;
    let book = ABSOLUTE_POS / (dim as usize * k);
    let code = ABSOLUTE_POS % k;
    let n = total[book];
    let smoothed =
        (cluster[book * k + code] + F::cast_from(eps)) / (n + F::cast_from(codes_eps)) * n;
    embed[ABSOLUTE_POS] = avg[ABSOLUTE_POS] / smoothed;
}

/// [`super::codebook_ema_decay`] on a GPU backend; `None` when a tensor is not a plain tensor of
/// this process's GPU backend (f32; the indices 32- or 64-bit integers), the shapes disagree or
/// a size is zero.
pub fn decay(
    x: &BurnTensor<3>,
    indices: &BurnTensor<2, Int>,
    cluster_size: &BurnTensor<2>,
    embed_avg: &BurnTensor<3>,
    keep: f32,
    add: f32,
) -> Option<(BurnTensor<2>, BurnTensor<3>)> {
    let [m, l, d] = x.dims();
    let [_, k] = cluster_size.dims();
    if indices.dims() != [m, l]
        || cluster_size.dims() != [m, k]
        || embed_avg.dims() != [m, d, k]
        || m * l * d * k == 0
        || indices.is_autodiff()
    {
        return None;
    }
    let (input, cluster_old, avg_old) = (
        plain_f32_contiguous(x.clone())?,
        plain_f32_contiguous(cluster_size.clone())?,
        plain_f32_contiguous(embed_avg.clone())?,
    );
    let indices = contiguous(indices.clone().try_into_primitive::<CubeBackend>().ok()?);
    let index_type = index_type(indices.dtype)?;
    let same_device = [&indices, &cluster_old, &avg_old]
        .iter()
        .all(|t| t.device == input.device);
    if !same_device {
        return None;
    }
    let (cluster, avg) = (empty_like(&cluster_old), empty_like(&avg_old));
    let (cube_count, cube_dim) = grid(&input, m * (d + 1) * k);
    ema_decay_kernel::launch(
        &input.client,
        cube_count,
        cube_dim,
        input.clone().into_tensor_arg(),
        indices.into_tensor_arg(),
        cluster_old.into_tensor_arg(),
        avg_old.into_tensor_arg(),
        cluster.clone().into_tensor_arg(),
        avg.clone().into_tensor_arg(),
        l as u32,
        d as u32,
        k as u32,
        keep,
        add,
        [F32, index_type],
    );
    Some((to_burn(cluster), to_burn(avg)))
}

/// [`super::codebook_ema_normalise`] on a GPU backend; `None` when a tensor is not a plain f32
/// tensor of this process's GPU backend or the shapes disagree.
pub fn normalise(
    embed_avg: &BurnTensor<3>,
    cluster_size: &BurnTensor<2>,
    total: &BurnTensor<2>,
    eps: f32,
    codes_eps: f32,
) -> Option<BurnTensor<3>> {
    let [m, d, k] = embed_avg.dims();
    if cluster_size.dims() != [m, k] || total.dims() != [m, 1] || m * d * k == 0 {
        return None;
    }
    let (avg, cluster, total) = (
        plain_f32_contiguous(embed_avg.clone())?,
        plain_f32_contiguous(cluster_size.clone())?,
        plain_f32_contiguous(total.clone())?,
    );
    if cluster.device != avg.device || total.device != avg.device {
        return None;
    }
    let embed = empty_like(&avg);
    let (cube_count, cube_dim) = grid(&avg, m * d * k);
    ema_normalise_kernel::launch(
        &avg.client,
        cube_count,
        cube_dim,
        avg.clone().into_tensor_arg(),
        cluster.into_tensor_arg(),
        total.into_tensor_arg(),
        embed.clone().into_tensor_arg(),
        d as u32,
        k as u32,
        eps,
        codes_eps,
        F32,
    );
    Some(to_burn(embed))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor, TensorData};

    use crate::kernels::gpu::values;

    /// On wgpu, both kernels against the step in f64 on the host from the same f32 inputs:
    /// three codebooks of 13 codes in 10 dimensions, 37 tokens each, some codes chosen by no
    /// token and one by many. The decayed values within a rounding per token summed plus three
    /// (`old·keep + Σx·add`, each term's magnitude); the codes within eight roundings of their
    /// value (two additions, two divisions, a product, the division by the smoothed count).
    #[test]
    fn decay_and_normalise_match_the_ema_step_in_f64() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(9);
        let (m, l, d, k) = (3usize, 37usize, 10usize, 13usize);
        let x = Tensor::<3>::random([m, l, d], Distribution::Normal(0.0, 2.0), &device);
        // Codes 0..9 only, code 4 for every fifth token: 10, 11 and 12 go unused.
        let idx: Vec<i64> = (0..m * l)
            .map(|i| {
                if i % 5 == 0 {
                    4
                } else {
                    ((i * 7 + i / l) % 10) as i64
                }
            })
            .collect();
        let indices = Tensor::<2, Int>::from_data(TensorData::new(idx.clone(), [m, l]), &device);
        let cluster_old = Tensor::<2>::random([m, k], Distribution::Uniform(0.0, 5.0), &device);
        let avg_old = Tensor::<3>::random([m, d, k], Distribution::Normal(0.0, 3.0), &device);
        let (keep, add) = (0.99f32, (1.0 - 0.99f32 as f64) as f32);
        let (eps, codes_eps) = (1e-5f32, (k as f64 * 1e-5f32 as f64) as f32);

        let (cluster, avg) = decay(&x, &indices, &cluster_old, &avg_old, keep, add).unwrap();
        let total = cluster.clone().sum_dim(1);
        let embed = normalise(&avg, &cluster, &total, eps, codes_eps).unwrap();

        let (xv, co, ao) = (values(x), values(cluster_old), values(avg_old));
        let (cv, av, ev, nv) = (values(cluster), values(avg), values(embed), values(total));
        let eps32 = f32::EPSILON as f64;
        let (keep64, add64) = (keep as f64, add as f64);
        for j in 0..m {
            for code in 0..k {
                let chosen: Vec<usize> =
                    (0..l).filter(|&t| idx[j * l + t] == code as i64).collect();
                let old = co[j * k + code] as f64;
                let want = old * keep64 + chosen.len() as f64 * add64;
                let bound = (chosen.len() as f64 + 3.0) * eps32 * want.abs().max(1e-30);
                let got = cv[j * k + code] as f64;
                assert!(
                    (got - want).abs() <= bound,
                    "count {j},{code}: {got} vs {want}"
                );
                let n = nv[j] as f64;
                let smoothed = (got + eps as f64) / (n + codes_eps as f64) * n;
                for row in 0..d {
                    let at = (j * d + row) * k + code;
                    let terms: Vec<f64> = chosen
                        .iter()
                        .map(|&t| xv[(j * l + t) * d + row] as f64)
                        .collect();
                    let sum: f64 = terms.iter().sum();
                    let magnitude = (ao[at] as f64 * keep64).abs()
                        + terms.iter().map(|v| v.abs()).sum::<f64>() * add64;
                    let want = ao[at] as f64 * keep64 + sum * add64;
                    let bound = (terms.len() as f64 + 3.0) * eps32 * magnitude;
                    let got = av[at] as f64;
                    assert!(
                        (got - want).abs() <= bound,
                        "sum {j},{row},{code}: {got} vs {want}"
                    );
                    let want_code = got / smoothed;
                    let got_code = ev[at] as f64;
                    assert!(
                        (got_code - want_code).abs() <= 8.0 * eps32 * want_code.abs(),
                        "code {j},{row},{code}: {got_code} vs {want_code}"
                    );
                }
            }
        }
        // An unused code only decays.
        assert_eq!(cv[k - 1], co[k - 1] * keep);
    }
}
