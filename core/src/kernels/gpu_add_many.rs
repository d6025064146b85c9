//! Several independent broadcast additions `x + y` in one GPU launch (CubeCL: wgpu, CUDA).
//!
//! A transformer layer at inference adds a bias to each of its query, key and value projections
//! and the positional embedding to its queries and keys: small additions, each a launch of its
//! own in burn, whose operands are all ready at the same point. Here one launch takes up to
//! [`PAIRS_PER_LAUNCH`] pairs; one thread computes one output element of one pair, the same
//! single f32 addition burn's broadcast `add` makes, so the results are the same bits.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{F32, binds, contiguous_f32, empty_like, grid, to_burn, unread_slot};

/// Pairs one launch adds.
pub(super) const PAIRS_PER_LAUNCH: usize = 3;

/// Bindings one launch needs: two inputs and an output per pair, and the launch's metadata.
const BINDINGS: u32 = 3 * PAIRS_PER_LAUNCH as u32 + 1;

/// `out[j] = x[j] + y[j mod |y|]` for the `j` of thread `i` when `i` falls in `[start, end)`.
#[cube]
fn add_pair<F: Float>(
    x: &Tensor<F>,
    y: &Tensor<F>,
    out: &mut Tensor<F>,
    i: usize,
    start: u32,
    end: u32,
) {
    if i >= start as usize && i < end as usize {
        let j = i - start as usize;
        out[j] = x[j] + y[j % y.len()];
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn add_many_kernel<F: Float>(
    x0: &Tensor<F>,
    y0: &Tensor<F>,
    out0: &mut Tensor<F>,
    x1: &Tensor<F>,
    y1: &Tensor<F>,
    out1: &mut Tensor<F>,
    x2: &Tensor<F>,
    y2: &Tensor<F>,
    out2: &mut Tensor<F>,
    ends: Sequence<u32>,
    #[define(F)] _dtype: ElemType,
) {
    let count = comptime!(ends.len());
    let i = ABSOLUTE_POS;
    add_pair(x0, y0, out0, i, 0u32, ends[0]);
    if comptime!(count > 1) {
        add_pair(x1, y1, out1, i, ends[0], ends[1]);
    }
    if comptime!(count > 2) {
        add_pair(x2, y2, out2, i, ends[1], ends[2]);
    }
}

/// Whether `y` broadcasts onto `x` by repetition: its shape, leading ones removed, is the end of
/// `x`'s (so element `j` of `x` meets element `j mod |y|` of `y`).
fn repeats_onto(x: &[usize], y: &[usize]) -> bool {
    let first = y.iter().position(|&d| d != 1).unwrap_or(y.len());
    let tail = &y[first..];
    tail.len() <= x.len() && x[x.len() - tail.len()..] == *tail
}

/// [`super::add_many`] on a GPU backend: `x + y` for every pair, `y` broadcast onto `x`
/// ([`repeats_onto`]). `None` when a tensor is not a plain contiguous f32 tensor of this
/// process's GPU backend, a `y` does not broadcast that way, the devices differ or the device
/// binds too few buffers; the caller adds them one by one (burn's additions read any layout, so
/// declining costs a launch a pair, where copying each tensor first would cost one a tensor).
pub fn add_many<const D: usize>(
    pairs: &[(BurnTensor<D>, BurnTensor<D>)],
) -> Option<Vec<BurnTensor<D>>> {
    let mut taken: Vec<(CubeTensor, CubeTensor)> = Vec::with_capacity(pairs.len());
    for (x, y) in pairs {
        if !repeats_onto(&x.dims(), &y.dims()) {
            return None;
        }
        let (x, y) = (contiguous_f32(x.clone())?, contiguous_f32(y.clone())?);
        if y.meta.num_elements() == 0 || x.device != y.device {
            return None;
        }
        taken.push((x, y));
    }
    let first = &taken.first()?.0;
    if taken.iter().any(|(x, _)| x.device != first.device) || !binds(first, BINDINGS) {
        return None;
    }
    let client = first.client.clone();
    // Slots past a launch's pairs: the kernel never touches them.
    let unused = unread_slot(first);
    let mut outputs = Vec::with_capacity(taken.len());
    for chunk in taken.chunks(PAIRS_PER_LAUNCH) {
        let mut ends = SequenceArg::<u32>::new();
        let mut total = 0usize;
        let mut slots = Vec::with_capacity(3 * PAIRS_PER_LAUNCH);
        for (x, y) in chunk {
            total += x.meta.num_elements();
            ends.push(u32::try_from(total).ok()?);
            let out = empty_like(x);
            slots.extend([x.clone(), y.clone(), out.clone()]);
            outputs.push(out);
        }
        while slots.len() < 3 * PAIRS_PER_LAUNCH {
            slots.push(unused.clone());
        }
        let (cube_count, cube_dim) = grid(first, total);
        let mut args = slots.into_iter().map(CubeTensor::into_tensor_arg);
        let mut next = || args.next().expect("nine slots");
        add_many_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            next(),
            ends,
            F32,
        );
    }
    Some(outputs.into_iter().map(to_burn).collect())
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::values;

    /// On wgpu, five pairs (two launches): biases `[1, 1, E]` and a positional table `[1, L, E]`
    /// over `[B, L, E]` activations, a same-shape pair, the same `y` twice: each output bit for
    /// bit burn's broadcast `add`. A `y` that does not repeat onto its `x`, and an `x` with rows
    /// padded apart, are refused.
    #[test]
    fn several_adds_in_one_launch_equal_burns_adds() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(4);
        let t =
            |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Normal(0.0, 2.0), &device);
        let (b, l, e) = (2, 13, 24);
        let bias = t([1, 1, e]);
        let pos = t([1, l, e]);
        let pairs = vec![
            (t([b, l, e]), bias.clone()),
            (t([b, l, 2 * e]), t([1, 1, 2 * e])),
            (t([b, l, e]), pos.clone()),
            (t([b, 5, e]), t([b, 5, e])),
            (t([b, l, e]), pos),
        ];
        let _ = add_many(&pairs).unwrap();
        let profiler = crate::device::kernel_profile::KernelProfiler::start("adds");
        let got = add_many(&pairs).unwrap();
        assert_eq!(profiler.finish().stages[0].launches, 2);
        for (sum, (x, y)) in got.into_iter().zip(pairs) {
            let want = x + y;
            assert_eq!(sum.dims(), want.dims());
            let bits = |t: Tensor<3>| values(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(sum), bits(want));
        }
        assert!(add_many(&[(t([b, l, e]), t([1, l, 1]))]).is_none());
        // Rows padded apart (CUDA's layout of burn's outputs) are left to burn's additions, one
        // launch a pair that read any layout, where copying first would cost a launch a tensor.
        let padded = crate::kernels::gpu::padded_rows(t([b, l, e]));
        assert!(add_many(&[(padded, bias)]).is_none());
        assert!(repeats_onto(&[2, 3, 4], &[1, 1, 4]) && repeats_onto(&[2, 3, 4], &[3, 4]));
        assert!(!repeats_onto(&[2, 3, 4], &[2, 1, 4]));
    }
}
