//! Multi-head attention as one operation on the CPU backend, forward and backward.
//!
//! Composed from burn operations, one attention splits the heads (a copy when q and k are halves
//! of one projection), writes the whole `[B, H, Lq, Lk]` score tensor, reads it back for the
//! softmax, again for the product with v, and merges the heads (another copy): on the official
//! shapes those passes over 10 MB cost more than the two products themselves (README, issue 22).
//! Here every (batch, head) pair is one task: `S = q_h·k_hᵀ` into a buffer that stays in cache,
//! the scaled softmax in place, then `P·v_h` written straight into the head's columns of the
//! `[B, Lq, E]` output. q, k and v are read where they lie (halves of a packed projection
//! included), through `gemm` with strides.
//!
//! Training keeps `P` (the backward needs it) and runs the backward the same way, per pair:
//! `∂v = Pᵀ·∂o`, `∂P = ∂o·vᵀ`, the softmax's `∂S = scale · P ⊙ (∂P − Σ ∂P ⊙ P)`, `∂q = ∂S·k`,
//! `∂k = ∂Sᵀ·q`. Dropout on the attention weights uses the same counter-based masks as
//! [`super::dropout_mask`] (same seed draw, same element indices), so a step draws exactly the
//! masks the composed form would, and the backward regenerates them instead of storing them.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Device, Shape, Tensor};

use super::dropout_mask::{self, Dropout};

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    heads: usize,
    /// Query length.
    lq: usize,
    /// Key/value length.
    lk: usize,
    /// Width per head (`E / heads`).
    head_dim: usize,
    /// The logits' scale, `1/√head_dim`.
    scale: f32,
}

impl Geometry {
    fn width(&self) -> usize {
        self.heads * self.head_dim
    }

    fn tasks(&self) -> usize {
        self.batch * self.heads
    }

    /// Elements of one pair's weight matrix.
    fn pair(&self) -> usize {
        self.lq * self.lk
    }
}

/// A `[B, L, E]` f32 tensor read in place: its buffer, first element and the strides of its
/// batch and row axes (the last axis has unit stride).
struct Operand<'a> {
    data: &'a [f32],
    start: usize,
    batch_stride: isize,
    row_stride: isize,
}

impl<'a> Operand<'a> {
    fn of(t: &'a FlexTensor) -> Self {
        let strides = t.layout().strides();
        debug_assert_eq!(strides[2], 1, "attention operands have unit last stride");
        Self {
            data: t.storage::<f32>(),
            start: t.layout().start_offset(),
            batch_stride: strides[0],
            row_stride: strides[1],
        }
    }

    /// The first element of head `h` of batch `b`.
    fn head(&self, b: usize, h: usize, head_dim: usize) -> *const f32 {
        let offset = self.start as isize + b as isize * self.batch_stride + (h * head_dim) as isize;
        // SAFETY: the layout addresses this element (b < B, h·head_dim < E) inside the buffer.
        unsafe { self.data.as_ptr().offset(offset) }
    }
}

/// `t` with a unit-stride last axis and non-negative strides (a copy only when it lacks them),
/// so its heads can be handed to `gemm` in place.
fn readable(t: FlexTensor) -> FlexTensor {
    let strides = t.layout().strides();
    if strides[2] == 1 && strides[0] >= 0 && strides[1] >= 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// A pointer that tasks on other threads write through, each to its own elements.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes a disjoint set of elements (its own head's columns or its own
// pair's weights), and the buffer outlives the parallel loop.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Element `i` (a method, so closures capture the whole `Shared` and not its raw field).
    ///
    /// # Safety
    /// `i` lies inside the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.add(i) }
    }
}

/// `dst = lhs·rhs` for `m×k` by `k×n`, each operand given by its first element, row stride and
/// column stride (`dst`: unit column stride). Single-threaded: the callers split by head.
///
/// # Safety
/// Every addressed element lies inside its buffer; `dst` is not read and not aliased.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: isize,
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            false,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Scratch space for one thread's tasks: up to two weight matrices, allocated (and zeroed) on
/// first use only, since a task may need neither (training's forward writes into the kept
/// weights; only dropout needs the second).
#[derive(Default)]
struct Scratch(Vec<f32>, Vec<f32>);

impl Scratch {
    fn first(&mut self, n: usize) -> &mut [f32] {
        grown(&mut self.0, n)
    }

    /// The first buffer, and the second when `second` (else an empty slice).
    fn two(&mut self, n: usize, second: bool) -> (&mut [f32], &mut [f32]) {
        grown(&mut self.0, n);
        let m = if second { n } else { 0 };
        grown(&mut self.1, m);
        (&mut self.0[..n], &mut self.1[..m])
    }
}

fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Run `task(scratch, pair)` for every (batch, head) pair, across the thread pool in a few runs
/// of consecutive pairs per thread (each run allocates its scratch once).
fn for_each_pair(g: Geometry, task: impl Fn(&mut Scratch, usize) + Sync + Send) {
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        let runs = rayon::current_num_threads().max(1) * 4;
        (0..g.tasks())
            .into_par_iter()
            .with_min_len(g.tasks().div_ceil(runs).max(1))
            .for_each_init(Scratch::default, |scratch, pair| task(scratch, pair));
    }
    #[cfg(not(feature = "parallel"))]
    {
        let mut scratch = Scratch::default();
        for pair in 0..g.tasks() {
            task(&mut scratch, pair);
        }
    }
}

fn tensor(values: Vec<f32>, shape: [usize; 3]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::new(shape)),
        DType::F32,
    )
}

/// The attention output `[B, Lq, E]` and, when `keep_weights`, the softmax weights
/// `[B·H, Lq, Lk]` (before dropout) for the backward.
fn forward(
    q: &FlexTensor,
    k: &FlexTensor,
    v: &FlexTensor,
    g: Geometry,
    dropout: Option<Dropout>,
    keep_weights: bool,
) -> (FlexTensor, Option<Vec<f32>>) {
    let (qo, ko, vo) = (Operand::of(q), Operand::of(k), Operand::of(v));
    let e = g.width();
    let mut out = vec![0f32; g.batch * g.lq * e];
    let mut weights = if keep_weights {
        vec![0f32; g.tasks() * g.pair()]
    } else {
        Vec::new()
    };
    let out_ptr = Shared(out.as_mut_ptr());
    let weights_ptr = Shared(weights.as_mut_ptr());
    for_each_pair(g, |scratch, pair| {
        let (b, h) = (pair / g.heads, pair % g.heads);
        let (scores, dropped): (&mut [f32], &mut [f32]) = if keep_weights {
            // SAFETY: pair `pair` owns elements [pair·Lq·Lk, (pair+1)·Lq·Lk) of `weights`.
            let kept = unsafe {
                std::slice::from_raw_parts_mut(weights_ptr.at(pair * g.pair()), g.pair())
            };
            let dropped = if dropout.is_some() {
                scratch.first(g.pair())
            } else {
                &mut []
            };
            (kept, dropped)
        } else {
            scratch.two(g.pair(), dropout.is_some())
        };
        // SAFETY (both products): the operands' layouts address these heads; `scores` holds
        // Lq×Lk; the output head is columns [h·d, (h+1)·d) of batch b's Lq rows of width E.
        unsafe {
            product(
                (g.lq, g.lk, g.head_dim),
                scores.as_mut_ptr(),
                g.lk as isize,
                (qo.head(b, h, g.head_dim), qo.row_stride, 1),
                (ko.head(b, h, g.head_dim), 1, ko.row_stride),
            );
        }
        super::simd::softmax_rows(scores, g.lk, g.scale);
        let applied: &[f32] = match dropout {
            Some(d) => {
                d.fill_at(dropped, pair * g.pair());
                for (m, p) in dropped.iter_mut().zip(scores.iter()) {
                    *m *= *p;
                }
                dropped
            }
            None => scores,
        };
        unsafe {
            product(
                (g.lq, g.head_dim, g.lk),
                out_ptr.at(b * g.lq * e + h * g.head_dim),
                e as isize,
                (applied.as_ptr(), g.lk as isize, 1),
                (vo.head(b, h, g.head_dim), vo.row_stride, 1),
            );
        }
    });
    let weights = keep_weights.then_some(weights);
    (tensor(out, [g.batch, g.lq, e]), weights)
}

/// Gradients of q, k and v (`[B, Lq, E]`, `[B, Lk, E]`, `[B, Lk, E]`) from the output's.
fn backward(
    grad_out: &FlexTensor,
    (q, k, v): (&FlexTensor, &FlexTensor, &FlexTensor),
    weights: &[f32],
    g: Geometry,
    dropout: Option<Dropout>,
) -> [FlexTensor; 3] {
    let grad_out = grad_out.to_contiguous();
    let go = Operand::of(&grad_out);
    let (qo, ko, vo) = (Operand::of(q), Operand::of(k), Operand::of(v));
    let e = g.width();
    let mut dq = vec![0f32; g.batch * g.lq * e];
    let mut dk = vec![0f32; g.batch * g.lk * e];
    let mut dv = vec![0f32; g.batch * g.lk * e];
    let (dq_ptr, dk_ptr, dv_ptr) = (
        Shared(dq.as_mut_ptr()),
        Shared(dk.as_mut_ptr()),
        Shared(dv.as_mut_ptr()),
    );
    for_each_pair(g, |scratch, pair| {
        let (grad_p, dropped) = scratch.two(g.pair(), dropout.is_some());
        let (b, h) = (pair / g.heads, pair % g.heads);
        let p = &weights[pair * g.pair()..(pair + 1) * g.pair()];
        let d = g.head_dim;
        let lk = g.lk as isize;
        // SAFETY (all four products): as in the forward; dq's head is batch b's Lq rows,
        // dk's and dv's batch b's Lk rows, columns [h·d, (h+1)·d), width E.
        // ∂P = ∂o·vᵀ (then through the dropout mask).
        unsafe {
            product(
                (g.lq, g.lk, d),
                grad_p.as_mut_ptr(),
                lk,
                (go.head(b, h, d), go.row_stride, 1),
                (vo.head(b, h, d), 1, vo.row_stride),
            );
        }
        let applied: &[f32] = match dropout {
            Some(drop) => {
                drop.fill_at(dropped, pair * g.pair());
                for ((gp, m), w) in grad_p.iter_mut().zip(dropped.iter_mut()).zip(p) {
                    *gp *= *m;
                    *m *= *w;
                }
                dropped
            }
            None => p,
        };
        // ∂v = (P ⊙ mask)ᵀ·∂o.
        unsafe {
            product(
                (g.lk, d, g.lq),
                dv_ptr.at(b * g.lk * e + h * d),
                e as isize,
                (applied.as_ptr(), 1, lk),
                (go.head(b, h, d), go.row_stride, 1),
            );
        }
        super::softmax_autodiff::rows_backward(grad_p, p, g.lk, g.scale);
        // ∂q = ∂S·k, ∂k = ∂Sᵀ·q.
        unsafe {
            product(
                (g.lq, d, g.lk),
                dq_ptr.at(b * g.lq * e + h * d),
                e as isize,
                (grad_p.as_ptr(), lk, 1),
                (ko.head(b, h, d), ko.row_stride, 1),
            );
            product(
                (g.lk, d, g.lq),
                dk_ptr.at(b * g.lk * e + h * d),
                e as isize,
                (grad_p.as_ptr(), 1, lk),
                (qo.head(b, h, d), qo.row_stride, 1),
            );
        }
    });
    [
        tensor(dq, [g.batch, g.lq, e]),
        tensor(dk, [g.batch, g.lk, e]),
        tensor(dv, [g.batch, g.lk, e]),
    ]
}

/// The autodiff node: it keeps q, k, v (views of their buffers) and the softmax weights.
#[derive(Debug)]
struct FusedAttention {
    geometry: Geometry,
    dropout: Option<Dropout>,
}

impl Backward<Flex, 3> for FusedAttention {
    type State = (FlexTensor, FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (q, k, v, weights) = ops.state;
        let grad_out = grads.consume::<Flex>(&ops.node);
        let [dq, dk, dv] = backward(
            &grad_out,
            (&q, &k, &v),
            &weights,
            self.geometry,
            self.dropout,
        );
        for (parent, grad) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<Flex>(node.id, grad);
            }
        }
    }
}

/// Whether [`fused_attention`] takes attention inputs like `q`: f32 on the CPU backend, plain
/// (inference) or tracked by autodiff (training) without gradient checkpointing. Elsewhere
/// callers compose the attention from burn operations.
pub fn attention_fuses(q: &Tensor<3>) -> bool {
    // Its products are f32 ones: at a half precision the composed form runs them in half.
    super::softmax_kernel_takes(q) && super::products::half_dtype().is_none()
}

/// Multi-head scaled dot-product attention, `softmax(q_h·k_hᵀ/√d)·v_h` per head of
/// `q [B, Lq, E]`, `k`, `v [B, Lk, E]` (d = E/heads), the heads merged into `[B, Lq, E]`;
/// inverted dropout with probability `p` on the weights (0: none). Only where
/// [`attention_fuses`] holds.
pub fn fused_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    p: f64,
) -> Tensor<3> {
    let [batch, lq, e] = q.dims();
    let [kb, lk, ke] = k.dims();
    assert!(
        kb == batch && ke == e && v.dims() == [batch, lk, e] && heads > 0 && e % heads == 0,
        "attention: q {:?}, k {:?}, v {:?} and {heads} heads do not fit",
        q.dims(),
        k.dims(),
        v.dims()
    );
    if batch == 0 || lq == 0 || lk == 0 || e == 0 {
        // Nothing to attend over (or nothing to produce): the composed form's empty sums, zeros
        // (`q · 0` keeps the autodiff graph and the shape).
        return q.mul_scalar(0.0);
    }
    let head_dim = e / heads;
    let geometry = Geometry {
        batch,
        heads,
        lq,
        lk,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
    };
    let device = q.device();
    let dropout = (p > 0.0).then(|| draw_dropout(&device, 1.0 - p));
    if !q.is_autodiff() {
        let [q, k, v] = [q, k, v].map(|t| match t.try_into_primitive::<Flex>() {
            Ok(t) => readable(t),
            // `attention_fuses` checked the device; a mismatch here is a bug in that check.
            Err(e) => panic!("kernels: CPU tensor expected: {e:?}"),
        });
        let (out, _) = forward(&q, &k, &v, geometry, dropout, false);
        return Tensor::from_primitive::<Flex>(out);
    }
    let [(q, qn), (k, kn), (v, vn)] = [q, k, v].map(|t| {
        match t.try_into_primitive::<Autodiff<Flex, NoCheckpointing>>() {
            Ok(t) => {
                let (inner, node) = t.into_parts();
                (readable(inner), node)
            }
            // `attention_fuses` checked the device; a mismatch here is a bug in that check.
            Err(e) => panic!("kernels: tracked CPU tensor expected: {e:?}"),
        }
    });
    let op = FusedAttention { geometry, dropout };
    let out = match op
        .prepare::<NoCheckpointing>([qn, kn, vn])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, weights) = forward(&q, &k, &v, geometry, dropout, true);
            let weights = weights.expect("kept for the backward");
            prep.finish((q, k, v, weights), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(&q, &k, &v, geometry, dropout, false).0),
    };
    Tensor::from_primitive::<Autodiff<Flex, NoCheckpointing>>(out)
}

/// The dropout of one call: the seed drawn from the device's generator as
/// [`dropout_mask::dropout_mask`] draws it, so the composed and fused forms see the same masks.
fn draw_dropout(device: &Device, keep: f64) -> Dropout {
    match dropout_mask::draw(device, keep) {
        Some(d) => d,
        // `attention_fuses` checked the device is the CPU backend, where the seed is always drawn.
        None => panic!("kernels: CPU device expected for dropout"),
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution, Tensor};

    /// The attention written out in burn operations (burn's own softmax, the mask from
    /// [`super::dropout_mask::dropout_mask`]): the independent form the fused one must equal.
    fn reference(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, p: f64) -> Tensor<3> {
        let [b, lq, e] = q.dims();
        let lk = k.dims()[1];
        let d = e / heads;
        let split =
            |t: Tensor<3>, l: usize| -> Tensor<4> { t.reshape([b, l, heads, d]).swap_dims(1, 2) };
        let scores = split(q, lq)
            .matmul(split(k, lk).swap_dims(2, 3))
            .div_scalar((d as f64).sqrt());
        let mut weights = softmax(scores, 3);
        if p > 0.0 {
            let mask = super::super::dropout_mask::<4>(weights.shape(), 1.0 - p, &weights.device())
                .expect("CPU");
            weights = weights * mask;
        }
        weights
            .matmul(split(v, lk))
            .swap_dims(1, 2)
            .reshape([b, lq, e])
    }

    fn max_abs(a: Tensor<3>, b: Tensor<3>) -> f32 {
        (a - b).abs().max().into_data().try_to_vec::<f32>().unwrap()[0]
    }

    /// q and k as the two halves of one packed projection (strided views, as the model passes
    /// them), cross-attention lengths (Lq ≠ Lk), several heads.
    fn inputs(device: &Device) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
        let packed = Tensor::<3>::random([3, 7, 64], Distribution::Normal(0.0, 1.0), device);
        let q = packed.narrow(2, 0, 32);
        let k = Tensor::<3>::random([3, 11, 64], Distribution::Normal(0.0, 1.0), device)
            .narrow(2, 32, 32);
        let v = Tensor::<3>::random([3, 11, 32], Distribution::Normal(0.0, 1.0), device);
        (q, k, v)
    }

    #[test]
    fn no_keys_give_zeros_as_the_empty_sums_do() {
        let device = Device::flex();
        let q = Tensor::<3>::ones([2, 3, 8], &device);
        let kv = Tensor::<3>::ones([2, 0, 8], &device);
        let out = super::fused_attention(q, kv.clone(), kv, 2, 0.0);
        assert_eq!(out.dims(), [2, 3, 8]);
        assert_eq!(out.abs().max().into_scalar::<f32>(), 0.0);
    }

    #[test]
    fn inference_equals_the_composed_attention() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(5);
        let (q, k, v) = inputs(&device);
        assert!(super::attention_fuses(&q));
        let fused = super::fused_attention(q.clone(), k.clone(), v.clone(), 4, 0.0);
        let composed = reference(q, k, v, 4, 0.0);
        assert_eq!(fused.dims(), [3, 7, 32]);
        // Outputs are O(1); the two forms round differently in the products and the softmax.
        let diff = max_abs(fused, composed);
        assert!(diff < 2e-6, "{diff}");
    }

    /// Values and the gradients of q, k and v, without and with dropout (same device seed, so
    /// the fused form must draw the composed form's masks).
    #[test]
    fn training_values_and_gradients_equal_the_composed_attention() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex().autodiff();
        for p in [0.0, 0.3] {
            device.seed(8);
            let (q, k, v) = inputs(&device);
            let (q, k, v) = (
                q.detach().require_grad(),
                k.detach().require_grad(),
                v.detach().require_grad(),
            );
            let weight = Tensor::<3>::random([3, 7, 32], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                device.seed(21);
                let out = if fused {
                    assert!(super::attention_fuses(&q));
                    super::fused_attention(q.clone(), k.clone(), v.clone(), 4, p)
                } else {
                    reference(q.clone(), k.clone(), v.clone(), 4, p)
                };
                let grads = (out.clone() * weight.clone()).sum().backward();
                let g = |t: &Tensor<3>| t.grad(&grads).expect("tracked");
                (out.inner(), g(&q), g(&k), g(&v))
            };
            let (out_f, dq_f, dk_f, dv_f) = run(true);
            let (out_c, dq_c, dk_c, dv_c) = run(false);
            let diffs = [
                max_abs(out_f, out_c),
                max_abs(dq_f, dq_c),
                max_abs(dk_f, dk_c),
                max_abs(dv_f, dv_c),
            ];
            // Gradients are O(1) sums over ≤ 11 keys and 7 queries.
            assert!(
                diffs.iter().all(|&d| d < 1e-5),
                "p {p}: out, dq, dk, dv differ by {diffs:?}"
            );
            if p > 0.0 {
                // The masks were drawn: some weight was dropped, so the output differs from p = 0.
                device.seed(21);
                let undropped = super::fused_attention(q.clone(), k.clone(), v.clone(), 4, 0.0);
                device.seed(21);
                let dropped = super::fused_attention(q.clone(), k.clone(), v.clone(), 4, p);
                assert!(max_abs(undropped.inner(), dropped.inner()) > 1e-2);
            }
        }
    }
}
