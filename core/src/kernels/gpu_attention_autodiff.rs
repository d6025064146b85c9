//! Multi-head attention with its packed input projection as one autodiff operation on the GPU
//! backends (CubeCL: wgpu, CUDA), for training.
//!
//! burn's autodiff records a training attention as some seventy launches per layer and step
//! (`hvq bench --kernels`, official shapes): the projection's row blocks and the query/key halves
//! are narrows, each of whose backward fills a zero buffer of the whole and writes its part into
//! it; splitting and merging the heads are copies; the scale, the dropout's draw, its scale and
//! product, and the products' gradients are launches of their own. With twelve attentions that
//! was over half of a training step's launches. Here, under one autodiff node:
//!
//! - forward: the projections' products (one per input tensor, its row blocks at once) and their
//!   biases in one launch, then one kernel, one thread per (batch, head, query): the row's
//!   scaled dot products, its softmax (kept: the backward needs it), the dropout mask decided
//!   per element from a counter-based hash of a seed drawn on the device (no read-back), and the
//!   weighted values written into the head's columns of the merged `[B, Lq, E]` result;
//! - backward: one kernel per query row (`∂P = ∂o·vᵀ` through the mask, the softmax's
//!   `∂S = scale · P ⊙ (∂P − Σ ∂P ⊙ P)`, `∂q = ∂S·k`) and one per key row (`∂k = ∂Sᵀ·q`,
//!   `∂v = (P ⊙ mask)ᵀ·∂o`), both writing into one `[B, L, 3E]` gradient of the packed
//!   projection, whose column sums are the bias's gradient, whose blocks times the inputs are
//!   the weight's and times the weight the inputs'.
//!
//! The inputs come with their offsets (the positional embedding added to queries and keys), and
//! a tensor given for several blocks is one parent of the node: self-attention's `x` gets one
//! gradient, the packed gradient times the whole packed weight, and the positional embedding
//! one, its blocks' columns summed over the batch times their weight rows. Given `x + pos` and
//! `x` as two tensors, autodiff would add their gradients (and the broadcast addition's sum over
//! the batch) in launches of its own.
//!
//! The formulas are the composed form's (`model::attention`'s `composed_heads`, PyTorch's): the
//! softmax as the softmax kernel computes it (`e^{s(x − max)}`, then divided by the row's sum),
//! inverted dropout scaling kept weights by `1/(1 − p)`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops};
use burn::tensor::{DType, Distribution, Int, Tensor as BurnTensor};
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::ProjectionInput;
use super::gpu::{
    F32, contiguous, cube, index_type, node_array, recorded, to_burn, tracked_f32_on_gpu,
    tracked_parts,
};
use super::gpu_attention_split::{
    CUBE, Dims, DimsLaunch, Operand, OperandLaunch, PAD, PARTIAL, QUERIES, SPLIT, SplitAttention,
    at, dropped, element, load_row, load_stage, pair_grid, pair_of_cube, place, share_sums,
    stage_keys, write_share_sums,
};
use super::gpu_column_sums::column_sums;
use super::products;

use super::gpu_attention_split::MAX_HEAD_DIM;

/// Per (batch, head, query), its keys shared out among [`SPLIT`] threads as in the forward
/// (`gpu_attention_split`): `∂P = ∂o·vᵀ` through the mask (values staged), `Σ ∂P ⊙ P` added
/// over the threads in share order, `∂S = scale · P ⊙ (∂P − Σ)` kept for the key kernel, and
/// `∂q = ∂S·k` (keys staged), written into the packed gradient `grad` at `qo`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_query_gradient_kernel<F: Float, I: Numeric>(
    d_out: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    probs: &Tensor<F>,
    seed: &Tensor<I>,
    d_scores: &mut Tensor<F>,
    grad: &mut Tensor<F>,
    ko: Operand,
    vo: Operand,
    qo: Operand,
    shape: Dims,
    pairs: u32,
    #[comptime] head_dim: usize,
    #[comptime] stage: usize,
    #[comptime] dropping: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let bh = pair_of_cube();
    if bh >= pairs as usize {
        terminate!();
    }
    let (lq, lk, heads) = (shape.lq as usize, shape.lk as usize, shape.heads as usize);
    let p = place(bh, heads, lq, head_dim, false);
    let (x, slot, thread, i, batch, column, valid) = (
        p.owner, p.share, p.thread, p.index, p.batch, p.column, p.valid,
    );
    let width = comptime!(head_dim + PAD);
    let per_slot = comptime!(stage / SPLIT);
    let row = (batch * lq + i) * heads * head_dim + column;
    let d_o = load_row(d_out, row, valid, head_dim);
    let k_first = element(&ko, batch * lk, column);
    let v_first = element(&vo, batch * lk, column);
    let mut staged = Shared::<[F]>::new_slice(comptime!(stage * (head_dim + PAD)));

    // ∂P through the mask, kept, and this thread's part of Σ ∂P ⊙ P.
    let mut dot = F::new(0.0);
    let mut t0 = 0;
    while t0 < lk {
        load_stage(
            v,
            v_first,
            vo.row as usize,
            t0,
            lk,
            &mut staged,
            thread,
            head_dim,
            stage,
        );
        sync_cube();
        #[unroll]
        for r in 0..per_slot {
            let key = slot * per_slot + r;
            let j = t0 + key;
            if valid && j < lk {
                let mut dp = F::new(0.0);
                #[unroll]
                for c in 0..head_dim {
                    dp += d_o[c] * staged[key * width + c];
                }
                let dp = dropped::<F, I>(dp, seed, bh, i, j, &shape, dropping);
                let a = at(bh, i, j, &shape);
                d_scores[a] = dp;
                dot += dp * probs[a];
            }
        }
        sync_cube();
        t0 += stage;
    }
    let mut parts = Shared::<[F]>::new_slice(CUBE);
    parts[thread] = dot;
    sync_cube();
    let mut row_dot = F::new(0.0);
    #[unroll]
    for t in 0..SPLIT {
        row_dot += parts[t * QUERIES + x];
    }

    // ∂S, kept, and this thread's part of ∂q.
    let s = F::cast_from(shape.scale);
    let mut acc = share_sums::<F>(head_dim);
    let mut t0 = 0;
    while t0 < lk {
        load_stage(
            k,
            k_first,
            ko.row as usize,
            t0,
            lk,
            &mut staged,
            thread,
            head_dim,
            stage,
        );
        sync_cube();
        #[unroll]
        for r in 0..per_slot {
            let key = slot * per_slot + r;
            let j = t0 + key;
            if valid && j < lk {
                let a = at(bh, i, j, &shape);
                let ds = probs[a] * (d_scores[a] - row_dot) * s;
                d_scores[a] = ds;
                #[unroll]
                for c in 0..head_dim {
                    acc[c] += ds * staged[key * width + c];
                }
            }
        }
        sync_cube();
        t0 += stage;
    }
    let mut partial = Shared::<[F]>::new_slice(PARTIAL);
    let q_at = element(&qo, batch * lq + i, column);
    write_share_sums(
        &acc,
        F::new(1.0),
        &mut partial,
        x,
        slot,
        valid,
        grad,
        q_at,
        head_dim,
    );
}

/// Per (batch, head, key), its queries shared out among [`SPLIT`] threads (the cube's keys
/// along y, the shares along x: neighbouring threads read neighbouring queries' probabilities),
/// queries and output gradients staged: `∂k = ∂Sᵀ·q` and `∂v = (P ⊙ mask)ᵀ·∂o`, each added over
/// the threads in share order and written into the packed gradient `grad` at `ko` and `vo`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_key_gradient_kernel<F: Float, I: Numeric>(
    d_out: &Tensor<F>,
    q: &Tensor<F>,
    probs: &Tensor<F>,
    d_scores: &Tensor<F>,
    seed: &Tensor<I>,
    grad: &mut Tensor<F>,
    qo: Operand,
    ko: Operand,
    vo: Operand,
    shape: Dims,
    pairs: u32,
    #[comptime] head_dim: usize,
    #[comptime] stage: usize,
    #[comptime] dropping: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let bh = pair_of_cube();
    if bh >= pairs as usize {
        terminate!();
    }
    let (lq, lk, heads) = (shape.lq as usize, shape.lk as usize, shape.heads as usize);
    let p = place(bh, heads, lk, head_dim, true);
    let (y, share, thread, j, batch, column, valid) = (
        p.owner, p.share, p.thread, p.index, p.batch, p.column, p.valid,
    );
    let width = comptime!(head_dim + PAD);
    let per_slot = comptime!(stage / SPLIT);
    let q_first = element(&qo, batch * lq, column);
    let o_first = batch * lq * heads * head_dim + column;
    let mut q_stage = Shared::<[F]>::new_slice(comptime!(stage * (head_dim + PAD)));
    let mut o_stage = Shared::<[F]>::new_slice(comptime!(stage * (head_dim + PAD)));
    let mut dk = share_sums::<F>(head_dim);
    let mut dv = share_sums::<F>(head_dim);
    let mut t0 = 0;
    while t0 < lq {
        load_stage(
            q,
            q_first,
            qo.row as usize,
            t0,
            lq,
            &mut q_stage,
            thread,
            head_dim,
            stage,
        );
        let o_row = heads * head_dim;
        load_stage(
            d_out,
            o_first,
            o_row,
            t0,
            lq,
            &mut o_stage,
            thread,
            head_dim,
            stage,
        );
        sync_cube();
        #[unroll]
        for r in 0..per_slot {
            // Every SPLIT-th query of the stage, so neighbouring shares read neighbours.
            let row = r * SPLIT + share;
            let i = t0 + row;
            if valid && i < lq {
                let a = at(bh, i, j, &shape);
                let ds = d_scores[a];
                let w = dropped::<F, I>(probs[a], seed, bh, i, j, &shape, dropping);
                #[unroll]
                for c in 0..head_dim {
                    dk[c] += ds * q_stage[row * width + c];
                    dv[c] += w * o_stage[row * width + c];
                }
            }
        }
        sync_cube();
        t0 += stage;
    }
    let mut partial = Shared::<[F]>::new_slice(PARTIAL);
    let key_row = batch * lk + j;
    let (k_at, v_at) = (element(&ko, key_row, column), element(&vo, key_row, column));
    write_share_sums(
        &dk,
        F::new(1.0),
        &mut partial,
        y,
        share,
        valid,
        grad,
        k_at,
        head_dim,
    );
    write_share_sums(
        &dv,
        F::new(1.0),
        &mut partial,
        y,
        share,
        valid,
        grad,
        v_at,
        head_dim,
    );
}

/// The sizes of one call.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    heads: usize,
    /// Query and key length (the same: one packed gradient holds q's, k's and v's rows).
    len: usize,
    /// Model width `E`.
    width: usize,
    /// Dropout probability on the attention weights.
    p: f64,
}

impl Geometry {
    fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    fn dropping(&self) -> bool {
        self.p > 0.0
    }

    fn dims(&self) -> DimsLaunch {
        let keep = 1.0 - self.p;
        DimsLaunch::new(
            self.heads as u32,
            self.len as u32,
            self.len as u32,
            1.0 / (self.head_dim() as f32).sqrt(),
            (1.0 / keep) as f32,
            (keep * (1u64 << 24) as f64).round() as u32,
        )
    }
}

/// Blocks 0, 1, 2 (q, k, v) as the kernels read them: the projection `[B, L, (to − from)·E]` of
/// the input whose blocks `[from, to)` hold it, and the block's place in it.
fn placed(
    projections: &[CubeTensor],
    blocks: &[(usize, usize)],
    width: usize,
) -> [(CubeTensor, OperandLaunch); 3] {
    [0, 1, 2].map(|block| {
        let (index, &(from, to)) = blocks
            .iter()
            .enumerate()
            .find(|(_, (from, to))| (*from..*to).contains(&block))
            .expect("the inputs tile the three blocks");
        let operand = OperandLaunch::new(
            ((to - from) * width) as u32,
            ((block - from) * width) as u32,
        );
        (projections[index].clone(), operand)
    })
}

/// Whether the inputs fit the operation: f32 tensors tracked by autodiff on a GPU backend,
/// `[B, L, E]` each, their blocks tiling q, k, v in order, offsets `[1 or B, L, E]`.
fn inputs_fit(inputs: &[ProjectionInput], [batch, len, width]: [usize; 3]) -> bool {
    let mut next = 0;
    for input in inputs {
        let offset_fits = input.offset.as_ref().is_none_or(|o| {
            let [ob, ol, ow] = o.dims();
            (ob == 1 || ob == batch) && ol == len && ow == width && tracked_f32_on_gpu(o)
        });
        if input.from != next
            || input.to <= input.from
            || input.x.dims() != [batch, len, width]
            || !tracked_f32_on_gpu(&input.x)
            || !offset_fits
        {
            return false;
        }
        next = input.to;
    }
    next == 3
}

/// The operation's parents among its inputs: the distinct tensors among the `x`s and the
/// offsets, each once, and which of them each input's `x` and offset is.
struct Sources {
    nodes: Vec<NodeGuard>,
    /// Per input: its `x` as the backend holds it and its parent.
    xs: Vec<(CubeTensor, usize)>,
    /// Per input: its offset and the offset's parent, if it has one.
    offsets: Vec<Option<(CubeTensor, usize)>>,
}

impl Sources {
    /// `None` when the offsets are more than one tensor or one of them is also an `x` (the
    /// gradient's shapes would differ): the caller composes the attention.
    fn of(inputs: &[ProjectionInput]) -> Option<Self> {
        let mut sources = Sources {
            nodes: Vec::new(),
            xs: Vec::new(),
            offsets: Vec::new(),
        };
        for input in inputs {
            let x = sources.parent(&input.x)?;
            sources.xs.push(x);
            let offset = match &input.offset {
                Some(o) => Some(sources.parent(o)?),
                None => None,
            };
            sources.offsets.push(offset);
        }
        let offset_parents: Vec<usize> = sources.offsets.iter().flatten().map(|o| o.1).collect();
        let one_offset = offset_parents.windows(2).all(|w| w[0] == w[1]);
        let apart = offset_parents
            .iter()
            .all(|o| sources.xs.iter().all(|x| x.1 != *o));
        (one_offset && apart).then_some(sources)
    }

    /// `t`'s contents and its parent's index, the same index for the same tensor.
    fn parent(&mut self, t: &BurnTensor<3>) -> Option<(CubeTensor, usize)> {
        let (inner, node) = tracked_parts(t.clone())?;
        let index = match self.nodes.iter().position(|n| n.id() == node.id()) {
            Some(index) => index,
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        Some((inner, index))
    }
}

/// `attention(q, k, v)` with `[q | k | v] = (x + offset)·Wᵀ + b` over the packed weight's row
/// blocks, as one autodiff operation: each input's `x` plus its offset if any is multiplied with
/// the blocks `[from, to)` (in order, together the three), the heads attend with dropout `p` on
/// their weights, and the result is the heads merged, `[B, L, E]` (the output projection is the
/// caller's). A tensor given for several blocks or as several offsets is one parent: its
/// gradient is one product over its blocks (summed over the batch for an offset `[1, L, E]`).
/// `None` when the inputs are not f32 tensors tracked by autodiff on a GPU backend without
/// gradient checkpointing, the blocks do not tile q, k, v in order, the inputs' batch or length
/// differ, the offsets are more than one tensor or also an input, or a head is wider than
/// [`MAX_HEAD_DIM`]: the caller composes it.
pub fn attention(
    inputs: &[ProjectionInput],
    weight: &BurnTensor<2>,
    bias: &BurnTensor<1>,
    heads: usize,
    p: f64,
) -> Option<BurnTensor<3>> {
    attention_with_mask_seed(inputs, weight, bias, heads, p, |device| {
        // Drawn on the device from its generator: masks follow the device seed, no read-back.
        BurnTensor::<1, Int>::random([2], Distribution::Uniform(0.0, 1_073_741_824.0), device)
    })
}

/// [`attention`] with the dropout mask's two seeds from `draw_seed` (called only when `p` > 0).
/// The tests hand fixed seeds: the device's generator is the process's, and another test
/// drawing between a re-seed and this draw would change the mask under them.
fn attention_with_mask_seed(
    inputs: &[ProjectionInput],
    weight: &BurnTensor<2>,
    bias: &BurnTensor<1>,
    heads: usize,
    p: f64,
    draw_seed: impl FnOnce(&burn::tensor::Device) -> BurnTensor<1, Int>,
) -> Option<BurnTensor<3>> {
    let [rows3, width] = weight.dims();
    let [batch, len, _] = inputs.first()?.x.dims();
    let fits = inputs_fit(inputs, [batch, len, width])
        && rows3 == 3 * width
        && bias.dims() == [rows3]
        && heads > 0
        && width.is_multiple_of(heads)
        && (1..=MAX_HEAD_DIM).contains(&(width / heads))
        && batch * len > 0
        && (0.0..1.0).contains(&p)
        && tracked_f32_on_gpu(weight)
        && tracked_f32_on_gpu(bias)
        // The counters of the mask are 32-bit.
        && batch * heads * len * len < u32::MAX as usize;
    if !fits {
        return None;
    }
    let geometry = Geometry {
        batch,
        heads,
        len,
        width,
        p,
    };
    let Sources {
        mut nodes,
        xs: sourced_xs,
        offsets,
    } = Sources::of(inputs)?;
    let blocks: Vec<(usize, usize)> = inputs.iter().map(|i| (i.from, i.to)).collect();
    let (w, w_node) = tracked_parts(weight.clone())?;
    let (b, b_node) = tracked_parts(bias.clone())?;
    nodes.extend([w_node, b_node]);

    // Each projection's input: `x`, or `x + offset` (all of them in one launch).
    let xs: Vec<CubeTensor> = super::with_offsets(
        sourced_xs
            .iter()
            .zip(&offsets)
            .map(|((x, _), o)| {
                (
                    to_burn::<3>(x.clone()),
                    o.as_ref().map(|(o, _)| to_burn(o.clone())),
                )
            })
            .collect(),
    )
    .into_iter()
    .map(|t| t.try_into_primitive::<CubeBackend>().ok().map(contiguous))
    .collect::<Option<_>>()?;

    // The projections, each input's blocks in one product, and all their biases in one launch.
    let products: Vec<BurnTensor<3>> = xs
        .iter()
        .zip(&blocks)
        .map(|(x, &(from, to))| {
            let rows = to_burn::<2>(w.clone()).narrow(0, from * width, (to - from) * width);
            products::linear(to_burn::<3>(x.clone()), rows.transpose(), None)
        })
        .collect();
    let pairs = products
        .into_iter()
        .zip(&blocks)
        .map(|(product, &(from, to))| {
            let n = (to - from) * width;
            let b = to_burn::<1>(b.clone()).narrow(0, from * width, n);
            (product, b.reshape([1, 1, n]))
        })
        .collect();
    let projections: Vec<CubeTensor> = super::add_many(pairs)
        .into_iter()
        .map(|t| t.try_into_primitive::<CubeBackend>().ok().map(contiguous))
        .collect::<Option<_>>()?;

    let device = w.device.clone();
    let plain = inputs[0].x.device().inner();
    let seed = if geometry.dropping() {
        draw_seed(&plain)
    } else {
        BurnTensor::<1, Int>::empty([2], &plain)
    };
    let seed = seed.try_into_primitive::<CubeBackend>().ok()?;
    let index_type = index_type(seed.dtype)?;
    let new = |shape: Vec<usize>| {
        empty_device_contiguous_dtype(w.client.clone(), device.clone(), shape.into(), w.dtype)
    };
    let out = new(vec![batch, len, width]);
    let probs = new(vec![batch * heads * len * len]);
    let [q, k, v] = placed(&projections, &blocks, width);
    SplitAttention {
        q,
        k,
        v,
        seed: (seed.clone(), index_type),
        probs: Some(probs.clone()),
        dims: geometry.dims(),
        batch,
        heads,
        lq: len,
        head_dim: geometry.head_dim(),
        dropping: geometry.dropping(),
    }
    .launch(&out);
    let op = AttentionOp { geometry };
    let offset = offsets.iter().flatten().next();
    let saved = Saved {
        xs,
        blocks,
        x_parents: sourced_xs.iter().map(|x| x.1).collect(),
        offset_parents: offsets.iter().map(|o| o.as_ref().map(|o| o.1)).collect(),
        offset_batch: offset.map_or(batch, |(o, _)| o.meta.shape()[0]),
        weight: w,
        projections,
        probs,
        seed,
        index_type,
    };
    Some(match nodes.len() {
        3 => recorded(op, node_array::<3>(nodes), saved, out),
        4 => recorded(op, node_array::<4>(nodes), saved, out),
        5 => recorded(op, node_array::<5>(nodes), saved, out),
        6 => recorded(op, node_array::<6>(nodes), saved, out),
        _ => unreachable!("one to three inputs, at most one offset, the weight and the bias"),
    })
}

/// The autodiff node; parents: the distinct input tensors and offsets, then the weight and the
/// bias.
#[derive(Debug)]
struct AttentionOp {
    geometry: Geometry,
}

/// What the backward needs.
#[derive(Clone, Debug)]
struct Saved {
    /// Each projection's input `[B, L, E]` (`x` or `x + offset`), contiguous.
    xs: Vec<CubeTensor>,
    /// Each input's row blocks `[from, to)`.
    blocks: Vec<(usize, usize)>,
    /// Each input's `x` as a parent index.
    x_parents: Vec<usize>,
    /// Each input's offset, if any, as a parent index.
    offset_parents: Vec<Option<usize>>,
    /// The offset's batch size: 1 when it is broadcast over the batch.
    offset_batch: usize,
    /// The packed weight `[3E, E]`.
    weight: CubeTensor,
    /// Each input's projection with its bias, `[B, L, (to − from)·E]`.
    projections: Vec<CubeTensor>,
    /// The softmax's probabilities before dropout, `[B, H, Lk, Lq]`.
    probs: CubeTensor,
    /// The dropout mask's seed (unread without dropout).
    seed: CubeTensor,
    index_type: ElemType,
}

/// The packed weight's gradient `[3E, E]` with each block's product written into its rows by
/// the product itself (no concatenation pass: a launch per block and a pass over the gradient
/// fewer), on the routine `products::matmul` would run it on (hvq's tiled kernel where it runs
/// this product, else burn's): at f32, when every block's rows start and end on the device's
/// buffer-offset alignment (burn's row views are then views, not copies). `None` otherwise, or
/// when a product refuses the layout; the caller concatenates.
fn weight_gradient_in_place(
    factors: &[(BurnTensor<2>, BurnTensor<2>)],
    blocks: &[(usize, usize)],
    width: usize,
    like: &CubeTensor,
) -> Option<CubeTensor> {
    use burn_cubecl::kernel::matmul::{MatmulStrategy, matmul};
    let alignment = like.client.properties().memory.alignment as usize;
    let block_bytes = width * width * std::mem::size_of::<f32>();
    let aligned = blocks.iter().all(|&(from, to)| {
        (from * block_bytes).is_multiple_of(alignment)
            && ((3 - to) * block_bytes).is_multiple_of(alignment)
    });
    if products::half_dtype().is_some() || !aligned {
        return None;
    }
    let d_weight = empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        [3 * width, width].into(),
        DType::F32,
    );
    for ((g, x), &(from, to)) in factors.iter().zip(blocks) {
        let rows =
            cube(to_burn::<2>(d_weight.clone()).narrow(0, from * width, (to - from) * width));
        match products::runs_tiled(g, x) {
            Some(size) => super::gpu_matmul_tiled::matmul_into(g, x, size, &rows)?,
            None => {
                matmul(
                    cube(g.clone()),
                    cube(x.clone()),
                    Some(rows),
                    MatmulStrategy::default(),
                    DType::F32,
                )
                .ok()?;
            }
        }
    }
    Some(d_weight)
}

/// The gradient of a tensor that entered the projection through the row blocks `spans`:
/// `Σ_span grad[:, span]·W[span]`, one product over adjacent blocks together (self-attention's
/// `x`: all three), `[B, L, E]`; with `batch_sum` (an offset broadcast over a batch of more
/// than one) the packed gradient's columns are first summed over the batch, `[1, L, E]`.
fn through_blocks(
    grad: &BurnTensor<3>,
    weight: &BurnTensor<2>,
    spans: &[(usize, usize)],
    batch_sum: bool,
) -> BurnTensor<3> {
    let [batch, len, width3] = grad.dims();
    let width = width3 / 3;
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut spans = spans.to_vec();
    spans.sort_unstable();
    for (from, to) in spans {
        match runs.last_mut() {
            Some(run) if run.1 == from => run.1 = to,
            _ => runs.push((from, to)),
        }
    }
    let batch_sum = batch_sum && batch > 1;
    let rows = if batch_sum { len } else { batch * len };
    runs.into_iter()
        .map(|(from, to)| {
            let (at, n) = (from * width, (to - from) * width);
            let g = if batch_sum {
                grad.clone().narrow(2, at, n).sum_dim(0).reshape([len, n])
            } else {
                grad.clone().reshape([batch * len, width3]).narrow(1, at, n)
            };
            products::matmul(g, weight.clone().narrow(0, at, n))
        })
        .reduce(|a, b| a + b)
        .expect("at least one block")
        .reshape([rows / len, len, width])
}

impl<const N: usize> Backward<CubeBackend, N> for AttentionOp {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let Saved {
            xs,
            blocks,
            x_parents,
            offset_parents,
            offset_batch,
            weight,
            projections,
            probs,
            seed,
            index_type,
        } = ops.state;
        let geometry = self.geometry;
        let (width, rows) = (geometry.width, geometry.batch * geometry.len);
        let d_out = contiguous(grads.consume::<CubeBackend>(&ops.node));
        let client = d_out.client.clone();
        let new = |shape: Vec<usize>| {
            empty_device_contiguous_dtype(
                client.clone(),
                d_out.device.clone(),
                shape.into(),
                d_out.dtype,
            )
        };
        // The packed projection's gradient: every column is written, q's by the first kernel,
        // k's and v's by the second.
        let grad = new(vec![geometry.batch, geometry.len, 3 * width]);
        let d_scores = new(vec![probs.meta.num_elements()]);
        let packed = |block: usize| OperandLaunch::new(3 * width as u32, (block * width) as u32);
        let [(q, qo), (k, ko), (v, vo)] = placed(&projections, &blocks, width);
        let pairs = geometry.batch * geometry.heads;
        let stage = stage_keys(geometry.head_dim());
        let (cube_count, cube_dim) = pair_grid(geometry.len, pairs, false);
        attention_query_gradient_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            d_out.clone().into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            probs.clone().into_tensor_arg(),
            seed.clone().into_tensor_arg(),
            d_scores.clone().into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            ko,
            vo,
            packed(0),
            geometry.dims(),
            pairs as u32,
            geometry.head_dim(),
            stage,
            geometry.dropping(),
            [F32, index_type],
        );
        let (cube_count, cube_dim) = pair_grid(geometry.len, pairs, true);
        attention_key_gradient_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            d_out.clone().into_tensor_arg(),
            q.into_tensor_arg(),
            probs.into_tensor_arg(),
            d_scores.into_tensor_arg(),
            seed.into_tensor_arg(),
            grad.clone().into_tensor_arg(),
            qo,
            packed(1),
            packed(2),
            geometry.dims(),
            pairs as u32,
            geometry.head_dim(),
            stage,
            geometry.dropping(),
            [F32, index_type],
        );

        let grad3 = to_burn::<3>(grad);
        let grad = grad3.clone().reshape([rows, 3 * width]);
        let weight = to_burn::<2>(weight);
        let parents = ops.parents;
        let (sources, params) = parents.split_at(N - 2);
        if let Some(node) = &params[1] {
            // ∂b: the packed gradient's column sums.
            let d_bias = column_sums(cube(grad.clone()));
            grads.register::<CubeBackend>(node.id, d_bias);
        }
        if let Some(node) = &params[0] {
            // ∂W, block by block: the block's gradient columns, transposed, times its input.
            let factors: Vec<(BurnTensor<2>, BurnTensor<2>)> = xs
                .iter()
                .zip(&blocks)
                .map(|(x, &(from, to))| {
                    let x = to_burn::<3>(x.clone()).reshape([rows, width]);
                    let g = grad.clone().narrow(1, from * width, (to - from) * width);
                    (g.transpose(), x)
                })
                .collect();
            let d_weight = weight_gradient_in_place(&factors, &blocks, width, &d_out)
                .unwrap_or_else(|| {
                    let parts = factors
                        .into_iter()
                        .map(|(g, x)| products::matmul(g, x))
                        .collect();
                    cube(BurnTensor::cat(parts, 0))
                });
            grads.register::<CubeBackend>(node.id, d_weight);
        }
        // Each input tensor once: its blocks' gradient columns times their weight rows, an
        // offset's summed over the batch when it is broadcast over it (an offset is never also
        // an `x`: `Sources::of`).
        for (index, parent) in sources.iter().enumerate() {
            let Some(node) = parent else { continue };
            let spans: Vec<(usize, usize)> = (0..blocks.len())
                .filter(|&i| x_parents[i] == index || offset_parents[i] == Some(index))
                .map(|i| blocks[i])
                .collect();
            let offset = offset_parents.contains(&Some(index));
            let d = through_blocks(&grad3, &weight, &spans, offset && offset_batch == 1);
            grads.register::<CubeBackend>(node.id, cube(d));
        }
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use burn::tensor::Tensor;

    use crate::kernels::gpu::{relative, values};

    /// The kernels' mix, on the host.
    fn mix_host(x: u32) -> u32 {
        let mut z = x;
        z ^= z >> 16;
        z = z.wrapping_mul(0x7feb_352d);
        z ^= z >> 15;
        z = z.wrapping_mul(0x846c_a68b);
        z ^ (z >> 16)
    }

    /// The mask the kernels draw for seed `(s0, s1)`, `[B, H, L, L]`, from the host hash.
    fn host_mask(seed: [u32; 2], [b, h, l]: [usize; 3], p: f64) -> Vec<f32> {
        let keep = 1.0 - p;
        let threshold = (keep * (1u64 << 24) as f64).round() as u32;
        let scale = (1.0 / keep) as f32;
        (0..(b * h * l * l) as u32)
            .map(|i| {
                if mix_host(mix_host(i ^ seed[0]) ^ seed[1]) >> 8 < threshold {
                    scale
                } else {
                    0.0
                }
            })
            .collect()
    }

    /// The composed form in burn's own operations (differentiable on any backend): each block's
    /// projection of `x + offset`, the heads split, `softmax(q·kᵀ/√d)`, times the mask if any,
    /// times v, merged.
    fn composed(
        inputs: &[ProjectionInput],
        weight: &Tensor<2>,
        bias: &Tensor<1>,
        heads: usize,
        mask: Option<Tensor<4>>,
    ) -> Tensor<3> {
        let [_, e] = weight.dims();
        let [b, l, _] = inputs[0].x.dims();
        let block = |n: usize| {
            let input = inputs.iter().find(|i| (i.from..i.to).contains(&n)).unwrap();
            let x = match &input.offset {
                Some(o) => input.x.clone() + o.clone(),
                None => input.x.clone(),
            };
            let w = weight.clone().narrow(0, n * e, e);
            let bias = bias.clone().narrow(0, n * e, e);
            burn::tensor::module::linear(x, w.transpose(), Some(bias))
        };
        let d = e / heads;
        let split = |t: Tensor<3>| -> Tensor<4> { t.reshape([b, l, heads, d]).swap_dims(1, 2) };
        let (q, k, v) = (split(block(0)), split(block(1)), split(block(2)));
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(1.0 / (d as f64).sqrt());
        let mut weights = burn::tensor::activation::softmax(scores, 3);
        if let Some(mask) = mask {
            weights = weights * mask;
        }
        weights.matmul(v).swap_dims(1, 2).reshape([b, l, e])
    }

    fn wgpu() -> Device {
        crate::device::create(crate::device::DeviceChoice::Wgpu)
            .unwrap()
            .autodiff()
    }

    /// One input of a case: which of the case's token tensors it takes and its row blocks.
    struct Use {
        tokens: usize,
        offset: bool,
        blocks: (usize, usize),
    }

    struct Case {
        batch: usize,
        len: usize,
        width: usize,
        heads: usize,
        /// The inputs: distinct tensors per block, or one tensor for several (self-attention's
        /// `x`, cross-attention's memory), with the offset or not.
        uses: Vec<Use>,
        /// The offset's batch (1: broadcast) and whether it is trained.
        offset_batch: usize,
        offset_trained: bool,
        p: f64,
    }

    /// The inputs from `(tokens, offset, blocks)` triples.
    fn uses(list: &[(usize, bool, (usize, usize))]) -> Vec<Use> {
        list.iter()
            .map(|&(tokens, offset, blocks)| Use {
                tokens,
                offset,
                blocks,
            })
            .collect()
    }

    /// One token tensor per input, no offsets.
    fn apart(blocks: &[(usize, usize)]) -> Vec<Use> {
        let list: Vec<_> = blocks
            .iter()
            .enumerate()
            .map(|(i, &b)| (i, false, b))
            .collect();
        uses(&list)
    }

    /// Self-attention as the encoder calls it: `x + pos` for queries and keys, `x` for values.
    fn self_positioned() -> Vec<Use> {
        uses(&[(0, true, (0, 2)), (0, false, (2, 3))])
    }

    /// Cross-attention as the decoder calls it: `t + pos`, `memory + pos`, `memory`.
    fn cross_positioned() -> Vec<Use> {
        uses(&[(0, true, (0, 1)), (1, true, (1, 2)), (1, false, (2, 3))])
    }

    /// The operation's output and every gradient against the composed form's under burn's
    /// autodiff, on wgpu, with the same dropout mask (rebuilt on the host from the seeds the
    /// operation is handed).
    fn matches_the_composed_form(case: &Case) -> Vec<(String, f32)> {
        let _generator = crate::test_rng::lock();
        let device = wgpu();
        let Case {
            batch,
            len,
            width,
            heads,
            ref uses,
            offset_batch,
            offset_trained,
            p,
        } = *case;
        let random = |shape: [usize; 3], sd: f64| {
            Tensor::<3>::random(shape, Distribution::Normal(0.0, sd), &device)
        };
        let tokens = uses.iter().map(|u| u.tokens).max().unwrap() + 1;
        let xs: Vec<Tensor<3>> = (0..tokens)
            .map(|_| random([batch, len, width], 1.0).require_grad())
            .collect();
        let offset = random([offset_batch, len, width], 0.5);
        let offset = if offset_trained {
            offset.require_grad()
        } else {
            offset
        };
        let weight = random([1, 3 * width, width], 0.3)
            .reshape([3 * width, width])
            .require_grad();
        let bias = random([1, 1, 3 * width], 0.3)
            .reshape([3 * width])
            .require_grad();
        let r = random([batch, len, width], 1.0);
        let inputs: Vec<ProjectionInput> = uses
            .iter()
            .map(|u| {
                let offset = u.offset.then(|| offset.clone());
                ProjectionInput::new(xs[u.tokens].clone(), offset, u.blocks.0, u.blocks.1)
            })
            .collect();

        // Fixed seeds handed to the operation (not drawn after re-seeding the device: another
        // test drawing from the process's generator in between would change the mask).
        let seeds = [987_654_321u32, 123_456_789];
        let plain = device.clone().inner();
        let mask = (p > 0.0).then(|| {
            let shape = [batch, heads, len, len];
            let values = host_mask(seeds, [batch, heads, len], p);
            Tensor::<4>::from_data(burn::tensor::TensorData::new(values, shape), &plain).autodiff()
        });
        let fused = attention_with_mask_seed(&inputs, &weight, &bias, heads, p, |device| {
            let seeds = seeds.map(i64::from).to_vec();
            BurnTensor::<1, Int>::from_data(burn::tensor::TensorData::new(seeds, [2]), device)
        })
        .expect("applies on wgpu");
        let want = composed(&inputs, &weight, &bias, heads, mask);

        let with_offset = offset_trained && uses.iter().any(|u| u.offset);
        let grads_of = |out: Tensor<3>| {
            let g = (out * r.clone()).sum().backward();
            let mut all: Vec<Vec<f32>> = xs
                .iter()
                .map(|x| values(x.grad(&g).unwrap().reshape([batch * len * width])))
                .collect();
            if with_offset {
                let n = offset_batch * len * width;
                all.push(values(offset.grad(&g).unwrap().reshape([n])));
            }
            all.push(values(
                weight.grad(&g).unwrap().reshape([3 * width * width]),
            ));
            all.push(values(bias.grad(&g).unwrap()));
            all
        };
        let mut gaps = vec![(
            "output".to_string(),
            relative(
                values(fused.clone().inner().reshape([batch * len * width])),
                values(want.clone().inner().reshape([batch * len * width])),
            ),
        )];
        let (got, expected) = (grads_of(fused), grads_of(want));
        assert_eq!(got.len(), expected.len());
        let names = (0..xs.len())
            .map(|i| format!("dx{i}"))
            .chain(with_offset.then(|| "doffset".to_string()))
            .chain(["dW".into(), "db".into()]);
        for ((name, a), b) in names.zip(got).zip(expected) {
            gaps.push((name, relative(a, b)));
        }
        gaps
    }

    #[test]
    fn one_operation_matches_the_composed_attention_and_its_gradients() {
        let case = |batch, len, width, heads, uses, p| Case {
            batch,
            len,
            width,
            heads,
            uses,
            offset_batch: 1,
            offset_trained: true,
            p,
        };
        let mut cases = Vec::new();
        for p in [0.0, 0.1] {
            // Self-attention (queries and keys from one input), three heads of 8, odd length.
            cases.push(case(2, 37, 24, 3, apart(&[(0, 2), (2, 3)]), p));
            // Cross-attention (three inputs), two heads of 32 (the official head width).
            cases.push(case(1, 50, 64, 2, apart(&[(0, 1), (1, 2), (2, 3)]), p));
            // As the encoder and decoder call it: one tensor for several blocks, the learned
            // positional embedding broadcast over the batch as the offset.
            cases.push(case(3, 37, 24, 3, self_positioned(), p));
            cases.push(case(2, 50, 64, 2, cross_positioned(), p));
        }
        // Heads not a multiple of the threads per row (12), over two stages of keys (64 each).
        cases.push(case(1, 70, 36, 3, self_positioned(), 0.1));
        // A batch of one (no sum over the batch), an offset per sample, an untrained offset.
        cases.push(case(1, 37, 24, 3, cross_positioned(), 0.0));
        cases.push(Case {
            offset_batch: 2,
            ..case(2, 37, 24, 3, self_positioned(), 0.0)
        });
        cases.push(Case {
            offset_trained: false,
            ..case(2, 50, 64, 2, cross_positioned(), 0.0)
        });
        for case in &cases {
            // Seen on lavapipe: at most 6.7e-7 of the largest value (sums of up to 100 terms
            // in another order); the bound leaves six times that.
            for (name, gap) in matches_the_composed_form(case) {
                assert!(
                    gap <= 4e-6,
                    "{name}: {gap} (batch {}, {} inputs, p {})",
                    case.batch,
                    case.uses.len(),
                    case.p
                );
            }
        }
    }

    /// With hvq's tiled kernel running the products (as `auto` may choose on a GPU), each
    /// block's weight gradient is written into its rows of the packed gradient by its product:
    /// the backward launches no concatenation (`SliceAssignKernel`), and every gradient matches
    /// the composed form's as on burn's routine. Widths 64 (blocks on the buffer alignment: in
    /// place) and 30 (3,600-byte blocks, off lavapipe's alignment: concatenated, as before).
    #[test]
    fn on_the_tiled_kernel_the_weight_gradient_is_written_in_place() {
        use crate::device::gpu_matmul::{TiledUse, tiled_here};
        tiled_here(Some(TiledUse::Always));
        for (width, uses) in [
            (64, self_positioned()),
            (64, cross_positioned()),
            (30, self_positioned()),
        ] {
            let case = Case {
                batch: 2,
                len: 50,
                width,
                heads: 2,
                uses,
                offset_batch: 1,
                offset_trained: true,
                p: 0.0,
            };
            for (name, gap) in matches_the_composed_form(&case) {
                assert!(gap <= 4e-6, "{name}: {gap} (width {width})");
            }
            // The backward's launches.
            let _generator = crate::test_rng::lock();
            let device = wgpu();
            let random = |shape: [usize; 2]| {
                Tensor::<2>::random(shape, Distribution::Normal(0.0, 0.3), &device).require_grad()
            };
            let xs: Vec<Tensor<3>> = (0..2)
                .map(|_| random([2 * 50, width]).reshape([2, 50, width]))
                .collect();
            let (weight, bias) = (random([3 * width, width]), random([1, 3 * width]));
            let bias = bias.reshape([3 * width]);
            let inputs: Vec<ProjectionInput> = case
                .uses
                .iter()
                .map(|u| ProjectionInput::new(xs[u.tokens].clone(), None, u.blocks.0, u.blocks.1))
                .collect();
            let out = attention(&inputs, &weight, &bias, 2, 0.0).expect("applies on wgpu");
            let loss = out.sum();
            let profiler = crate::device::kernel_profile::KernelProfiler::start("backward");
            let grads = loss.backward();
            let _ = values(weight.grad(&grads).unwrap().reshape([3 * width * width]));
            let profile = profiler.finish();
            let launched = profile.stages[0].names();
            assert!(
                launched.iter().any(|k| k.starts_with("TiledMatmul")),
                "{launched:?}"
            );
            let concatenated = launched.iter().any(|k| k.starts_with("SliceAssign"));
            assert_eq!(concatenated, width == 30, "width {width}: {launched:?}");
        }
        tiled_here(None);
    }

    /// A tensor given both as an input and as an offset, or two different offsets, is not
    /// taken (their gradients would not be one product's): the caller composes.
    #[test]
    fn offsets_that_are_inputs_or_several_are_refused() {
        let _generator = crate::test_rng::lock();
        let device = wgpu();
        let random =
            |b| Tensor::<3>::random([b, 5, 8], Distribution::Default, &device).require_grad();
        let (x, y, o) = (random(1), random(1), random(1));
        let weight = Tensor::<2>::random([24, 8], Distribution::Default, &device).require_grad();
        let bias = Tensor::<1>::zeros([24], &device).require_grad();
        let both = [
            ProjectionInput::new(x.clone(), Some(y.clone()), 0, 2),
            ProjectionInput::new(y.clone(), None, 2, 3),
        ];
        assert!(attention(&both, &weight, &bias, 2, 0.0).is_none());
        let two = [
            ProjectionInput::new(x.clone(), Some(y.clone()), 0, 2),
            ProjectionInput::new(x.clone(), Some(o.clone()), 2, 3),
        ];
        assert!(attention(&two, &weight, &bias, 2, 0.0).is_none());
        let one = [
            ProjectionInput::new(x.clone(), Some(o.clone()), 0, 2),
            ProjectionInput::new(x, None, 2, 3),
        ];
        assert!(attention(&one, &weight, &bias, 2, 0.0).is_some());
    }

    /// The mask keeps each weight with probability 1 − p, independently of position: the
    /// dropped fraction within 5 binomial standard deviations of p in each half and over odd and
    /// even positions, and another seed draws another mask.
    #[test]
    fn the_mask_drops_at_the_rate_asked() {
        let p = 0.1;
        let a = host_mask([12_345, 678_901], [4, 8, 196], p);
        assert_ne!(a, host_mask([12_346, 678_901], [4, 8, 196], p));
        let check = |part: Vec<f32>| {
            let n = part.len() as f64;
            let zeros = part.iter().filter(|&&v| v == 0.0).count() as f64;
            let sd = (n * p * (1.0 - p)).sqrt();
            assert!((zeros - p * n).abs() < 5.0 * sd, "{zeros} zeros of {n}");
        };
        check(a[..a.len() / 2].to_vec());
        check(a[a.len() / 2..].to_vec());
        check(a.iter().step_by(2).copied().collect());
        check(a.iter().skip(1).step_by(2).copied().collect());
    }
}
