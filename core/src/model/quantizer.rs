//! Vector quantisation with EMA codebooks (the vq-vae-2 `Quantize` the official code uses).
//!
//! Codebooks receive no gradient; during training they follow an exponential moving average of the
//! vectors assigned to each code. Output is the straight-through value `x + sg(q − x)`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Int, Tensor};

use super::batch_codes::BatchCodes;
use crate::weights::DerivedCache;

/// One codebook: `embed` `(D, K)` (codes are columns), `embed_avg` `(D, K)`, `cluster_size` `(K)`.
#[derive(Module, Debug)]
pub struct Codebook {
    /// Code vectors as columns.
    pub embed: Param<Tensor<2>>,
    /// EMA of the sums of assigned vectors.
    pub embed_avg: Param<Tensor<2>>,
    /// EMA of the assignment counts.
    pub cluster_size: Param<Tensor<1>>,
    /// The codes as rows `[1, K, D]`, their squared norms `[1, 1, K]` and their Euclidean norms
    /// `[1, 1, K]` (the OT score's), from the first forward that uses this codebook for a whole
    /// batch on (not a parameter; emptied when `embed` changes: [`ema_update`], loading).
    pub(super) rows_and_norms: DerivedCache<(Tensor<3>, Tensor<3>, Tensor<3>)>,
    /// Kept on a level's first codebook only: every codebook of the level, stacked in both
    /// layouts, from the first batch that mixes codebooks on; such a batch selects its samples'
    /// codebooks from it ([`BatchCodes::for_slots`]). Emptied when any codebook of the level
    /// moves ([`ema_update`]) and by loading.
    pub(super) level_stack: DerivedCache<BatchCodes>,
}

/// Result of quantising a batch at one level.
#[derive(Clone, Debug)]
pub struct QuantizeOutput {
    /// Straight-through output `x + sg(q − x)`, `[B, L, D]`.
    pub quantized: Tensor<3>,
    /// Per-sample commitment `mean((sg(q) − x)²)`.
    pub diff: Commitment,
    /// Nearest code per token, `[B, L]`.
    pub indices: Tensor<2, Int>,
    /// The selected code vectors `q` (no gradient), `[B, L, D]`.
    pub codes: Tensor<3>,
    /// The codebook each sample was quantised with (before any EMA update), `[B, D, K]`: the
    /// prototypes of the POT loss.
    pub prototypes: Tensor<3>,
}

/// The per-sample commitment `mean((sg(q) − x)²)` of a level: as computed, or as the per-token
/// squared gaps the inference kernel gives, averaged over the tokens only when asked (inference
/// never asks: a reduction per level spared).
#[derive(Clone, Debug)]
pub enum Commitment {
    /// Per sample, `[B]`.
    PerSample(Tensor<1>),
    /// Per token, `[B, L]`.
    PerToken(Tensor<2>),
}

impl Commitment {
    /// Per sample, `[B]`.
    pub fn per_sample(&self) -> Tensor<1> {
        match self {
            Self::PerSample(diff) => diff.clone(),
            Self::PerToken(gaps) => {
                let [b, _] = gaps.dims();
                gaps.clone().mean_dim(1).reshape([b])
            }
        }
    }
}

fn buffer<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t).set_require_grad(false)
}

impl Codebook {
    /// Reference init: embed ~ N(0,1), embed_avg = embed, cluster_size = 0.
    pub fn new(dim: usize, codes: usize, device: &Device) -> Self {
        let embed: Tensor<2> = Tensor::random([dim, codes], Distribution::Normal(0.0, 1.0), device);
        Self {
            embed_avg: buffer(embed.clone()),
            embed: buffer(embed),
            cluster_size: buffer(Tensor::zeros([codes], device)),
            rows_and_norms: DerivedCache::default(),
            level_stack: DerivedCache::default(),
        }
    }
}

/// The dead-code restart of one EMA step (see [`ema_update`]).
#[derive(Clone, Debug)]
pub struct Restart {
    /// Fraction of the codebook's mean count below which a code is dead.
    pub threshold: f32,
    /// Each token's squared distance to its chosen code, `[m, L]`.
    pub errors: Tensor<2>,
}

/// One EMA step for each of several *different* codebooks at once: codebook `slots[j]` of
/// `books` takes the tokens `x[j] [L, D]` assigned to `indices[j] [L]`. The formulas are the
/// reference's per-sample update (`cluster_size`, `embed_avg` decayed, Laplace-smoothed sizes),
/// evaluated for the m codebooks as batched tensors instead of m rounds of small ones.
///
/// With a [`Restart`] (`HvqConfig::codebook_restart` > 0; none is the reference), a code whose
/// decayed count falls below the threshold times the codebook's mean count
/// is moved onto a token of `x[j]` and given the mean count, so it keeps its new place for a few
/// hundred updates (the count then decays by `decay` per update, as any). The r-th dead code
/// takes token `(w + r·s) mod L`: w is the token its current code fits worst (largest
/// `errors[j]`, the squared distance to the chosen code), s a stride near L/φ coprime with L, so
/// one update's restarts spread over the sample. Everything stays on the device (no read-back).
///
/// On a GPU backend the decay and the normalisation are one kernel each
/// ([`crate::kernels::codebook_ema_decay`], [`crate::kernels::codebook_ema_normalise`]; the
/// restart, when asked, runs between them in tensor operations): three launches instead of
/// about thirty, the same f32 operations up to the order of the token sums.
///
/// The slots must be distinct: an update of a codebook must see the previous one (sample order),
/// which the caller ensures by grouping (see `HvqModel::forward_train`).
pub fn ema_update(
    books: &mut [Codebook],
    slots: &[usize],
    x: Tensor<3>,
    indices: Tensor<2, Int>,
    decay: f32,
    eps: f32,
    restart: Option<Restart>,
) {
    debug_assert!(
        slots
            .iter()
            .enumerate()
            .all(|(j, s)| !slots[..j].contains(s)),
        "ema_update: repeated codebook in {slots:?}"
    );
    let x = x.detach().without_autodiff();
    let [m, _, dim] = x.dims();
    let [_, codes] = books[slots[0]].embed.dims();
    // The buffers are computed on plain tensors and stored as they were (tracked or not).
    let tracked = books[slots[0]].cluster_size.val().is_autodiff();
    let cluster_old: Tensor<2> = stack_slots(books, slots, |b| b.cluster_size.val());
    let avg_old: Tensor<3> = stack_slots::<2, 3>(books, slots, |b| b.embed_avg.val());
    // The scalars as the composed form's `mul_scalar`s and `add_scalar`s round them to f32.
    let keep = decay as f64;
    let add = 1.0 - decay as f64;
    let codes_eps = codes as f64 * eps as f64;
    let decayed = crate::kernels::codebook_ema_decay(
        &x,
        &indices,
        &cluster_old,
        &avg_old,
        keep as f32,
        add as f32,
    );
    let (mut cluster_size, mut embed_avg) = decayed.unwrap_or_else(|| {
        let onehot: Tensor<3> = indices.one_hot::<3>(codes).float(); // [m, L, K]
        let onehot_sum: Tensor<2> = onehot.clone().sum_dim(1).reshape([m, codes]);
        let embed_sum = x.clone().swap_dims(1, 2).matmul(onehot); // [m, D, K]
        (
            cluster_old.mul_scalar(keep) + onehot_sum.mul_scalar(add), // [m, K]
            avg_old.mul_scalar(keep) + embed_sum.mul_scalar(add),      // [m, D, K]
        )
    });
    if let Some(restart) = restart {
        (cluster_size, embed_avg) = restart_dead_codes(cluster_size, embed_avg, x, restart);
    }
    let n = cluster_size.clone().sum_dim(1); // [m, 1]
    let normalised = crate::kernels::codebook_ema_normalise(
        &embed_avg,
        &cluster_size,
        &n,
        eps,
        codes_eps as f32,
    );
    let embed = normalised.unwrap_or_else(|| {
        let smoothed = (cluster_size.clone().add_scalar(eps as f64))
            .div(n.clone().add_scalar(codes_eps).expand([m, codes]))
            .mul(n.expand([m, codes]));
        embed_avg
            .clone()
            .div(smoothed.reshape([m, 1, codes]).expand([m, dim, codes]))
    });
    let (cluster_size, embed_avg, embed) = (
        as_stored(cluster_size, tracked),
        as_stored(embed_avg, tracked),
        as_stored(embed, tracked),
    );
    for (j, &s) in slots.iter().enumerate() {
        books[s].cluster_size = buffer(cluster_size.clone().narrow(0, j, 1).reshape([codes]));
        books[s].embed_avg = buffer(embed_avg.clone().narrow(0, j, 1).reshape([dim, codes]));
        books[s].embed = buffer(embed.clone().narrow(0, j, 1).reshape([dim, codes]));
        books[s].rows_and_norms.forget();
    }
    // The level's stack holds every codebook, the moved ones among them.
    if let Some(first) = books.first_mut() {
        first.level_stack.forget();
    }
}

/// `t` tracked by autodiff again when the buffers it replaces were (`tracked`).
fn as_stored<const D: usize>(t: Tensor<D>, tracked: bool) -> Tensor<D> {
    if tracked { t.autodiff() } else { t }
}

/// The dead-code restart of [`ema_update`] on the decayed counts `cluster_size [m, K]` and sums
/// `embed_avg [m, D, K]`, from the samples' tokens `x [m, L, D]`.
fn restart_dead_codes(
    cluster_size: Tensor<2>,
    embed_avg: Tensor<3>,
    x: Tensor<3>,
    Restart { threshold, errors }: Restart,
) -> (Tensor<2>, Tensor<3>) {
    let [m, tokens, dim] = x.dims();
    let [_, codes] = cluster_size.dims();
    let mean = cluster_size.clone().mean_dim(1); // [m, 1]
    let dead = cluster_size
        .clone()
        .lower(mean.clone().mul_scalar(threshold as f64).expand([m, codes])); // [m, K]
    // Rank of each dead code among the dead ones (0, 1, …), as a float (exact for K < 2^24).
    let rank = dead.clone().float().cumsum(1).sub_scalar(1.0);
    let worst = errors.argmax(1).float(); // [m, 1]
    let token = (worst.expand([m, codes]) + rank.mul_scalar(spread_stride(tokens) as f64))
        .remainder_scalar(tokens as f64)
        .int(); // [m, K]
    let offsets = Tensor::<1, Int>::arange(0..m as i64, &x.device())
        .mul_scalar(tokens as i64)
        .reshape([m, 1]);
    let rows = (token + offsets.expand([m, codes])).reshape([m * codes]);
    let picked = x
        .reshape([m * tokens, dim])
        .select(0, rows)
        .reshape([m, codes, dim])
        .swap_dims(1, 2); // [m, D, K]
    let share = mean.expand([m, codes]);
    let cluster_size = cluster_size.mask_where(dead.clone(), share.clone());
    // Sum = code × count, so the normalised code is the token itself.
    let moved = picked.mul(share.reshape([m, 1, codes]).expand([m, dim, codes]));
    let embed_avg =
        embed_avg.mask_where(dead.reshape([m, 1, codes]).expand([m, dim, codes]), moved);
    (cluster_size, embed_avg)
}

/// A stride near `tokens`/φ that is coprime with `tokens`, so `(w + r·s) mod tokens` visits every
/// token once for r = 0 … tokens − 1 and consecutive r land far apart.
fn spread_stride(tokens: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    let start = ((tokens as f64) * 0.618_034).round().max(1.0) as usize;
    (start..)
        .find(|&s| gcd(s, tokens.max(1)) == 1)
        .expect("1 is coprime with everything, and a larger coprime exists")
}

/// One buffer of the codebooks `slots`, stacked along a new first axis, as a plain tensor (no
/// gradient; plain tensors stack in fewer launches on a GPU).
fn stack_slots<const D: usize, const E: usize>(
    books: &[Codebook],
    slots: &[usize],
    buffer: impl Fn(&Codebook) -> Tensor<D>,
) -> Tensor<E> {
    super::joined::stack(
        slots
            .iter()
            .map(|&s| buffer(&books[s]).detach().without_autodiff())
            .collect(),
    )
}

/// Quantise `x [B, L, D]` where each sample uses its codebook in `codes`.
///
/// Distances are `‖x‖² − 2x·E + ‖E‖²` in that order (as the reference computes them), the code is
/// the first arg-min, and the output is the straight-through value.
pub fn quantize(x: Tensor<3>, codes: BatchCodes) -> QuantizeOutput {
    let [b, l, _] = x.dims();
    let k = codes.codes();
    let dots = codes.dots(x.clone()); // [B, L, K]
    let e_sq = codes.squared_norms(); // [G, 1, K]
    // On a GPU outside autodiff (inference, and training's code search on plain tensors)
    // everything after the product is one kernel, the same operations.
    let [g, _, _] = e_sq.dims();
    let norms = e_sq.clone().reshape([g, k]);
    if let Some(found) = crate::kernels::nearest_codes(&x, &dots, &norms, &codes.code_rows()) {
        return QuantizeOutput {
            quantized: found.quantized,
            diff: Commitment::PerToken(found.commitment),
            indices: found.indices,
            codes: found.codes,
            prototypes: codes.per_sample_columns(b).detach(),
        };
    }
    let x_sq = x.clone().powi_scalar(2).sum_dim(2); // [B, L, 1]
    let dist = x_sq.expand([b, l, k]) - dots.mul_scalar(2.0) + e_sq.expand([b, l, k]);
    let indices: Tensor<2, Int> = dist.argmin(2).reshape([b, l]);
    // The chosen codes are whole rows of the codes-as-rows matrix (gathering them element by
    // element from the stored `(D, K)` layout instead was 60 % of the stage on the CPU).
    let rows = (indices.clone() + codes.row_offsets(b).expand([b, l])).reshape([b * l]);
    let code_rows = codes.code_rows();
    let [_, d] = code_rows.dims();
    let q = code_rows.select(0, rows).reshape([b, l, d]).detach();
    let (quantized, diff) = straight_through(x, q.clone());
    QuantizeOutput {
        quantized,
        diff: Commitment::PerSample(diff),
        indices,
        codes: q,
        prototypes: codes.per_sample_columns(b).detach(),
    }
}

/// Straight-through output `x + sg(q − x)` and per-sample commitment `mean((sg(q) − x)²)` for
/// given code vectors `q [B, L, D]` (treated as constants). In training on a GPU backend at f32,
/// one kernel forward and one backward ([`crate::kernels::straight_through`]); elsewhere burn's
/// operations ([`crate::kernels::composed_straight_through`]).
pub fn straight_through(x: Tensor<3>, q: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
    if let Some(pair) = crate::kernels::straight_through(&x, &q) {
        return pair;
    }
    crate::kernels::composed_straight_through(x, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Every sample must be quantised with its own codebook: nearest code by brute force in
    /// f64, first index on ties, and the output rows equal to that code's column.
    #[test]
    fn each_sample_takes_the_nearest_code_of_its_own_codebook() {
        let _generator = crate::test_rng::lock();
        let (b, l, d, k) = (3, 5, 4, 6);
        // Deterministic, well-separated values (no near ties).
        let val = |i: usize, salt: usize| ((i * 37 + salt * 101) % 29) as f32 / 7.0 - 2.0;
        let xs: Vec<f32> = (0..b * l * d).map(|i| val(i, 1)).collect();
        let es: Vec<f32> = (0..b * d * k).map(|i| val(i, 2 + i / (d * k))).collect();
        let device = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(xs.clone(), [b, l, d]), &device);
        let e = Tensor::<3>::from_data(TensorData::new(es.clone(), [b, d, k]), &device);
        let out = quantize(x, BatchCodes::from_columns(e));
        let idx: Vec<i64> = out
            .indices
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let q = crate::device::read_back(out.codes).unwrap();
        for s in 0..b {
            for t in 0..l {
                let dist = |j: usize| -> f64 {
                    (0..d)
                        .map(|c| {
                            let xv = xs[(s * l + t) * d + c] as f64;
                            let ev = es[s * d * k + c * k + j] as f64;
                            (xv - ev).powi(2)
                        })
                        .sum()
                };
                let best = (0..k)
                    .min_by(|&a, &b| dist(a).partial_cmp(&dist(b)).unwrap())
                    .unwrap();
                assert_eq!(idx[s * l + t] as usize, best, "sample {s} token {t}");
                for c in 0..d {
                    assert_eq!(q[(s * l + t) * d + c], es[s * d * k + c * k + best]);
                }
            }
        }
    }

    fn book(embed: Vec<f32>, counts: Vec<f32>, dim: usize, device: &Device) -> Codebook {
        let codes = counts.len();
        let embed = Tensor::<2>::from_data(TensorData::new(embed, [dim, codes]), device);
        // embed_avg = embed × count, as a converged EMA holds them.
        let counts_t = Tensor::<1>::from_data(TensorData::new(counts, [codes]), device);
        let avg = embed.clone() * counts_t.clone().reshape([1, codes]).expand([dim, codes]);
        Codebook {
            embed: buffer(embed),
            embed_avg: buffer(avg),
            cluster_size: buffer(counts_t),
            rows_and_norms: DerivedCache::default(),
            level_stack: DerivedCache::default(),
        }
    }

    /// The reference's EMA step for one codebook, in f64 on the host: (counts, embed `[D][K]`).
    fn reference_step(
        counts: &[f64],
        avg: &[Vec<f64>],
        x: &[[f64; 2]],
        idx: &[usize],
        decay: f64,
        eps: f64,
    ) -> (Vec<f64>, Vec<Vec<f64>>) {
        let k = counts.len();
        let mut c: Vec<f64> = counts.iter().map(|v| v * decay).collect();
        let mut a: Vec<Vec<f64>> = avg
            .iter()
            .map(|row| row.iter().map(|v| v * decay).collect())
            .collect();
        for (t, &j) in idx.iter().enumerate() {
            c[j] += 1.0 - decay;
            for d in 0..2 {
                a[d][j] += (1.0 - decay) * x[t][d];
            }
        }
        let n: f64 = c.iter().sum();
        let embed = (0..2)
            .map(|d| {
                (0..k)
                    .map(|j| a[d][j] / ((c[j] + eps) / (n + k as f64 * eps) * n))
                    .collect()
            })
            .collect();
        (c, embed)
    }

    /// Dead codes (count below the threshold share of the mean) move onto the sample's tokens:
    /// the first onto the token its code fits worst, the next `spread_stride` tokens further;
    /// live codes take exactly the reference's EMA step, and without a restart every code does.
    #[test]
    fn dead_codes_restart_on_the_worst_fitting_tokens() {
        dead_codes_restart_on(Device::flex());
        // The restart is tensor operations only (cumsum, argmax, remainder, select, mask): the
        // same on a GPU backend (lavapipe here).
        #[cfg(feature = "wgpu")]
        dead_codes_restart_on(
            crate::device::create(crate::device::DeviceChoice::Wgpu).expect("wgpu device"),
        );
    }

    fn dead_codes_restart_on(device: Device) {
        let (decay, eps) = (0.99f32, 1e-5f32);
        // Four codes (columns) in 2-D: codes 0 and 1 in use, 2 and 3 nearly dead.
        let embed = vec![
            0.0, 1.0, 5.0, -5.0, // d = 0
            0.0, 1.0, 5.0, 5.0, // d = 1
        ];
        let counts = vec![4.0, 3.0, 1e-4, 2e-4];
        let x: Vec<[f64; 2]> = vec![[0.1, 0.0], [0.9, 1.2], [0.0, 0.2], [1.1, 0.8], [2.0, 2.5]];
        let idx = [0usize, 1, 0, 1, 1];
        // Errors: token 4 fits its code worst.
        let errors: Vec<f32> = x
            .iter()
            .zip(idx)
            .map(|(t, j)| {
                let c = [embed[j] as f64, embed[4 + j] as f64];
                ((t[0] - c[0]).powi(2) + (t[1] - c[1]).powi(2)) as f32
            })
            .collect();
        let flat: Vec<f32> = x.iter().flat_map(|t| [t[0] as f32, t[1] as f32]).collect();
        let run = |restart: Option<Restart>| {
            let mut books = vec![book(embed.clone(), counts.clone(), 2, &device)];
            let xs = Tensor::<3>::from_data(TensorData::new(flat.clone(), [1, 5, 2]), &device);
            let ids = Tensor::<2, Int>::from_data(
                TensorData::new(idx.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, 5]),
                &device,
            );
            ema_update(&mut books, &[0], xs, ids, decay, eps, restart);
            let b = books.pop().unwrap();
            (
                crate::device::read_back(b.cluster_size.val()).unwrap(),
                crate::device::read_back(b.embed.val()).unwrap(),
            )
        };
        let avg: Vec<Vec<f64>> = (0..2)
            .map(|d| {
                (0..4)
                    .map(|j| embed[d * 4 + j] as f64 * counts[j] as f64)
                    .collect()
            })
            .collect();
        let counts64: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        let (want_c, want_e) = reference_step(&counts64, &avg, &x, &idx, 0.99, 1e-5);

        // No restart: the reference for every code.
        let (c, e) = run(None);
        for j in 0..4 {
            assert!((c[j] as f64 - want_c[j]).abs() < 1e-5, "count {j}");
            for d in 0..2 {
                let w = want_e[d][j];
                assert!(
                    (e[d * 4 + j] as f64 - w).abs() < 1e-3 * w.abs().max(1.0),
                    "code {j}"
                );
            }
        }

        // Restart below 5 % of the mean count: codes 2 and 3 are dead.
        let errors_t = Tensor::<2>::from_data(TensorData::new(errors.clone(), [1, 5]), &device);
        let (c, e) = run(Some(Restart {
            threshold: 0.05,
            errors: errors_t,
        }));
        let mean = want_c.iter().sum::<f64>() / 4.0;
        let stride = spread_stride(5);
        assert_eq!(stride, 3, "round(5 × 0.618) = 3, coprime with 5");
        for (j, token) in [(2usize, 4usize), (3, (4 + stride) % 5)] {
            assert!(
                (c[j] as f64 - mean).abs() < 1e-4,
                "dead code {j} gets the mean count"
            );
            for d in 0..2 {
                let got = e[d * 4 + j] as f64;
                // The smoothing's eps keeps it a hair away from the token.
                assert!(
                    (got - x[token][d]).abs() < 1e-4,
                    "code {j} on token {token}: {got}"
                );
            }
        }
        let n_after: f64 = want_c[..2].iter().sum::<f64>() + 2.0 * mean;
        for j in 0..2 {
            assert!((c[j] as f64 - want_c[j]).abs() < 1e-5, "live count {j}");
            for d in 0..2 {
                // Live codes: the reference's sum over the new total count.
                let a = avg[d][j] * 0.99
                    + 0.01
                        * idx
                            .iter()
                            .zip(&x)
                            .filter(|(i, _)| **i == j)
                            .map(|(_, t)| t[d])
                            .sum::<f64>();
                let w = a / ((want_c[j] + 1e-5) / (n_after + 4e-5) * n_after);
                assert!((e[d * 4 + j] as f64 - w).abs() < 1e-4, "live code {j}");
            }
        }
    }

    /// On wgpu the EMA step of two codebooks is the two EMA kernels and one sum (no one-hot,
    /// product or scatter), and its counts, sums and codes match the CPU's composed step from
    /// the same inputs within the f32 rounding of a token sum (1e-5 of each value's scale),
    /// with and without a dead-code restart in between (the restart stays composed).
    #[cfg(feature = "wgpu")]
    #[test]
    fn the_gpu_ema_step_is_two_kernels_and_matches_the_composed_one() {
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).expect("wgpu device");
        let cpu = Device::flex();
        let _generator = crate::test_rng::lock();
        cpu.seed(4);
        let (l, d, k) = (29usize, 6usize, 9usize);
        let host = |t: Tensor<2>| crate::device::read_back(t).unwrap();
        let random = |shape: [usize; 2], lo: f64, hi: f64| {
            host(Tensor::<2>::random(
                shape,
                Distribution::Uniform(lo, hi),
                &cpu,
            ))
        };
        let (embeds, counts) = (random([2 * d, k], -2.0, 2.0), random([2, k], 0.0, 3.0));
        // Code 0 nearly dead in both books, so the restart moves it.
        let counts: Vec<f32> = counts
            .iter()
            .enumerate()
            .map(|(i, &c)| if i % k == 0 { 1e-4 } else { c })
            .collect();
        let tokens = random([2 * l, d], -3.0, 3.0);
        let idx: Vec<i64> = (0..2 * l)
            .map(|i| ((i * 5 + 1) % (k - 1) + 1) as i64)
            .collect();
        let errors = random([2, l], 0.0, 1.0);
        let run = |device: &Device, restart: bool| {
            let mut books: Vec<Codebook> = (0..2)
                .map(|b| {
                    book(
                        embeds[b * d * k..(b + 1) * d * k].to_vec(),
                        counts[b * k..(b + 1) * k].to_vec(),
                        d,
                        device,
                    )
                })
                .collect();
            let x = Tensor::<3>::from_data(TensorData::new(tokens.clone(), [2, l, d]), device);
            let ids = Tensor::<2, Int>::from_data(TensorData::new(idx.clone(), [2, l]), device);
            let restart = restart.then(|| Restart {
                threshold: 0.05,
                errors: Tensor::from_data(TensorData::new(errors.clone(), [2, l]), device),
            });
            let (_, profile) = crate::device::kernel_profile::profile("ema", || {
                ema_update(&mut books, &[1, 0], x, ids, 0.99, 1e-5, restart)
            });
            let read = |t: Tensor<2>| crate::device::read_back(t).unwrap();
            let buffers: Vec<Vec<f32>> = books
                .into_iter()
                .flat_map(|b| {
                    [
                        read(b.cluster_size.val().unsqueeze_dim(0)),
                        read(b.embed_avg.val()),
                        read(b.embed.val()),
                    ]
                })
                .collect();
            (buffers, profile)
        };
        for restart in [false, true] {
            let (want, _) = run(&cpu, restart);
            let (got, profile) = run(&wgpu, restart);
            for (g, w) in got.iter().zip(&want) {
                let scale = w.iter().fold(1.0f32, |a, v| a.max(v.abs()));
                for (a, b) in g.iter().zip(w) {
                    assert!(
                        (a - b).abs() <= 1e-5 * scale,
                        "restart {restart}: {a} vs {b}"
                    );
                }
            }
            let launches = |name: &str| {
                profile.stages[0]
                    .kernels
                    .iter()
                    .filter(|t| t.name.starts_with(name))
                    .map(|t| t.launches)
                    .sum::<usize>()
            };
            assert_eq!(launches("EmaDecayKernel"), 1, "restart {restart}");
            assert_eq!(launches("EmaNormaliseKernel"), 1, "restart {restart}");
            assert_eq!(
                launches("Matmul") + launches("Scatter"),
                0,
                "restart {restart}"
            );
        }
    }

    #[test]
    fn the_spread_stride_is_coprime_and_near_the_golden_section() {
        assert_eq!(spread_stride(196), 121);
        assert_eq!(spread_stride(1), 1);
        for tokens in 1..600usize {
            let s = spread_stride(tokens);
            let mut seen = vec![false; tokens];
            for r in 0..tokens {
                seen[(r * s) % tokens] = true;
            }
            assert!(seen.iter().all(|&v| v), "{tokens} tokens, stride {s}");
        }
    }
}
