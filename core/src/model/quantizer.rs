//! Vector quantisation with EMA codebooks (the vq-vae-2 `Quantize` the official code uses).
//!
//! Codebooks receive no gradient; during training they follow an exponential moving average of the
//! vectors assigned to each code. Output is the straight-through value `x + sg(q − x)`.

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Int, Tensor};

/// One codebook: `embed` `(D, K)` (codes are columns), `embed_avg` `(D, K)`, `cluster_size` `(K)`.
#[derive(Module, Debug)]
pub struct Codebook {
    /// Code vectors as columns.
    pub embed: Param<Tensor<2>>,
    /// EMA of the sums of assigned vectors.
    pub embed_avg: Param<Tensor<2>>,
    /// EMA of the assignment counts.
    pub cluster_size: Param<Tensor<1>>,
}

/// Result of quantising a batch at one level.
#[derive(Clone, Debug)]
pub struct QuantizeOutput {
    /// Straight-through output `x + sg(q − x)`, `[B, L, D]`.
    pub quantized: Tensor<3>,
    /// Per-sample commitment `mean((sg(q) − x)²)`, `[B]`.
    pub diff: Tensor<1>,
    /// Nearest code per token, `[B, L]`.
    pub indices: Tensor<2, Int>,
    /// The selected code vectors `q` (no gradient), `[B, L, D]`.
    pub codes: Tensor<3>,
    /// The codebook each sample was quantised with (before any EMA update), `[B, D, K]`: the
    /// prototypes of the POT loss.
    pub prototypes: Tensor<3>,
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
        }
    }
}

/// One EMA step for each of several *different* codebooks at once: codebook `slots[j]` of
/// `books` takes the tokens `x[j] [L, D]` assigned to `indices[j] [L]`. The formulas are the
/// reference's per-sample update (`cluster_size`, `embed_avg` decayed, Laplace-smoothed sizes),
/// evaluated for the m codebooks as batched tensors instead of m rounds of small ones.
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
    let onehot: Tensor<3> = indices.one_hot::<3>(codes).float(); // [m, L, K]
    let onehot_sum: Tensor<2> = onehot.clone().sum_dim(1).reshape([m, codes]);
    let embed_sum = x.swap_dims(1, 2).matmul(onehot); // [m, D, K]
    let cluster_old: Tensor<2> = stack_slots(books, slots, |b| b.cluster_size.val());
    let avg_old: Tensor<3> = stack_slots(books, slots, |b| b.embed_avg.val());
    let keep = decay as f64;
    let add = 1.0 - decay as f64;
    let cluster_size = cluster_old.mul_scalar(keep) + onehot_sum.mul_scalar(add); // [m, K]
    let embed_avg = avg_old.mul_scalar(keep) + embed_sum.mul_scalar(add); // [m, D, K]
    let n = cluster_size.clone().sum_dim(1); // [m, 1]
    let smoothed = (cluster_size.clone().add_scalar(eps as f64))
        .div(
            n.clone()
                .add_scalar(codes as f64 * eps as f64)
                .expand([m, codes]),
        )
        .mul(n.expand([m, codes]));
    let embed = embed_avg
        .clone()
        .div(smoothed.reshape([m, 1, codes]).expand([m, dim, codes]));
    for (j, &s) in slots.iter().enumerate() {
        books[s].cluster_size = buffer(cluster_size.clone().narrow(0, j, 1).reshape([codes]));
        books[s].embed_avg = buffer(embed_avg.clone().narrow(0, j, 1).reshape([dim, codes]));
        books[s].embed = buffer(embed.clone().narrow(0, j, 1).reshape([dim, codes]));
    }
}

/// One buffer of the codebooks `slots`, stacked along a new first axis (no gradient).
fn stack_slots<const D: usize, const E: usize>(
    books: &[Codebook],
    slots: &[usize],
    buffer: impl Fn(&Codebook) -> Tensor<D>,
) -> Tensor<E> {
    Tensor::stack(
        slots.iter().map(|&s| buffer(&books[s]).detach()).collect(),
        0,
    )
}

/// Quantise `x [B, L, D]` where sample b uses codebook `embeds[b]` (`[B, D, K]`).
///
/// Distances are `‖x‖² − 2x·E + ‖E‖²` in that order (as the reference computes them), the code is
/// the first arg-min, and the output is the straight-through value.
pub fn quantize(x: Tensor<3>, embeds: Tensor<3>) -> QuantizeOutput {
    let [b, l, d] = x.dims();
    let [_, _, k] = embeds.dims();
    // The codes as rows, `[B·K, D]` (one transposing copy): the code lookup below copies whole
    // rows of it, and ‖E‖² is a contiguous row sum. Gathering element by element from the
    // transposed view instead was 60 % of the stage on the CPU (official sizes).
    let codes = embeds.clone().swap_dims(1, 2).reshape([b * k, d]);
    let x_sq = x.clone().powi_scalar(2).sum_dim(2); // [B, L, 1]
    let e_sq = codes.clone().powi_scalar(2).sum_dim(1).reshape([b, 1, k]);
    let dist = x_sq.expand([b, l, k]) - x.clone().matmul(embeds.clone()).mul_scalar(2.0)
        + e_sq.expand([b, l, k]);
    let indices: Tensor<2, Int> = dist.argmin(2).reshape([b, l]);
    // Row of sample s's code j in `codes`: s·K + j.
    let offsets: Tensor<2, Int> = Tensor::<1, Int>::arange(0..b as i64, &x.device())
        .mul_scalar(k as i64)
        .reshape([b, 1]);
    let rows = (indices.clone() + offsets.expand([b, l])).reshape([b * l]);
    let q = codes.select(0, rows).reshape([b, l, d]).detach();
    let (quantized, diff) = straight_through(x, q.clone());
    QuantizeOutput {
        quantized,
        diff,
        indices,
        codes: q,
        prototypes: embeds.detach(),
    }
}

/// Straight-through output `x + sg(q − x)` and per-sample commitment `mean((sg(q) − x)²)` for
/// given code vectors `q [B, L, D]` (treated as constants).
pub fn straight_through(x: Tensor<3>, q: Tensor<3>) -> (Tensor<3>, Tensor<1>) {
    let [b, _, _] = x.dims();
    let q = q.detach();
    let diff = (q.clone() - x.clone())
        .powi_scalar(2)
        .mean_dim(2)
        .mean_dim(1)
        .reshape([b]);
    let quantized = x.clone() + (q - x).detach();
    (quantized, diff)
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
        let out = quantize(x, e);
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
}
