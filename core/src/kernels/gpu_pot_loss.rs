//! The POT loss (`model::ot::pot_loss`) as one autodiff operation on the GPU backends (CubeCL:
//! wgpu, CUDA), for training with the paper's objective.
//!
//! Per sample, with `s = x·e / τ`, `cos = x·e / (max(‖x‖, z)·max(‖e‖, z))`, the cost `c = 1 − cos`,
//! the forward plan `π→ = softmax_k(s)` and the backward plan `π← = softmax_n(s)`:
//! `loss = (1/L) Σ_n r_n + (1/K) Σ_k q_k` with `r_n = Σ_k π→ c` and `q_k = Σ_n π← c`.
//!
//! Composed from burn's operations that is some 28 launches over `[B, L, K]` tensors forward and
//! 50 backward per level (five levels a training step). Here, forward: the dot products, one
//! kernel for the token and prototype norms, one for both plans with `r` and `q` (a thread per
//! token walks its row, a thread per prototype its column), one for the loss. Backward, from the
//! upstream `g_b`: element-wise
//! `∂s = π→ (c − r_n)/L + π← (c − q_k)/K`, `∂cos = −(π→/L + π←/K)`,
//! `G = g_b (∂s/τ + ∂cos/(X E))` (the gradient at the dot products; `X`, `E` the clamped norms),
//! and `w = ∂cos · cos`; `∂x_n = Σ_k G e_k − g_b (Σ_k w / X²) x_n` where `‖x_n‖ > z` (the clamped
//! norm is a constant below it): one product and one kernel. The prototypes are constants (the
//! codebooks follow the EMA), so only `x` is a parent. Tested against the composed form in
//! `model::ot` (which holds it) and against the definition in `tests/paper.rs`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;

use super::gpu::{
    F32, contiguous, cube, empty_shaped, grid, node_array, plain_f32, recorded, to_burn,
    tracked_f32_on_gpu, tracked_parts,
};
use super::gpu_nearest_code::squared_norm;
use super::products;

/// Threads `[0, tokens)`: a token's norm `‖x_n‖` over D (`x` contiguous); threads
/// `[tokens, tokens + B·K)`: a prototype's norm `‖e_k‖` over D, `e [B, D, K]` read through its
/// strides (a codebook shared by the batch is a broadcast view).
#[cube(launch)]
fn pot_norms_kernel<F: Float>(
    x: &Tensor<F>,
    e: &Tensor<F>,
    token_norms: &mut Tensor<F>,
    code_norms: &mut Tensor<F>,
    dim: u32,
    #[define(F)] _dtype: ElemType,
) {
    let tokens = token_norms.len();
    let d = dim as usize;
    if ABSOLUTE_POS < tokens {
        token_norms[ABSOLUTE_POS] = F::sqrt(squared_norm(x, ABSOLUTE_POS * d, d));
    } else if ABSOLUTE_POS < tokens + code_norms.len() {
        let at = ABSOLUTE_POS - tokens;
        let k = e.shape(2);
        let base = (at / k) * e.stride(0) + (at % k) * e.stride(2);
        let mut sum = F::new(0.0);
        for i in 0..d {
            let v = e[base + i * e.stride(1)];
            sum += v * v;
        }
        code_norms[at] = F::sqrt(sum);
    }
}

/// The cosine of a dot product with the raw norms of its token and prototype, each clamped to
/// `zero` (a vector shorter than that counts as a zero vector, `model::ot`).
#[cube]
fn cosine<F: Float>(dot: F, token_norm: F, code_norm: F, zero: F) -> F {
    dot / (F::max(token_norm, zero) * F::max(code_norm, zero))
}

/// Threads `[0, B·L)`: a token's forward plan `π→` over its row of K dot products and its cost
/// `r_n`; threads `[B·L, B·L + B·K)`: a prototype's backward plan `π←` over its column of L and
/// its cost `q_k`. Each a stable softmax: maximum, sum of exponentials, then the plan.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn pot_plans_kernel<F: Float>(
    dots: &Tensor<F>,
    token_norms: &Tensor<F>,
    code_norms: &Tensor<F>,
    forward_plan: &mut Tensor<F>,
    backward_plan: &mut Tensor<F>,
    row_costs: &mut Tensor<F>,
    column_costs: &mut Tensor<F>,
    tokens_per_sample: u32,
    code_count: u32,
    temperature: f32,
    zero_norm: f32,
    #[define(F)] _dtype: ElemType,
) {
    let l = tokens_per_sample as usize;
    let k = code_count as usize;
    let rows = row_costs.len();
    let tau = F::cast_from(temperature);
    let zero = F::cast_from(zero_norm);
    let one = F::new(1.0);
    if ABSOLUTE_POS < rows {
        let token = ABSOLUTE_POS;
        let codes = (token / l) * k;
        let base = token * k;
        let mut max = dots[base] / tau;
        for j in 1..k {
            max = F::max(max, dots[base + j] / tau);
        }
        let mut total = F::new(0.0);
        for j in 0..k {
            total += F::exp(dots[base + j] / tau - max);
        }
        let x_norm = token_norms[token];
        let mut cost = F::new(0.0);
        for j in 0..k {
            let dot = dots[base + j];
            let p = F::exp(dot / tau - max) / total;
            forward_plan[base + j] = p;
            let cos = cosine::<F>(dot, x_norm, code_norms[codes + j], zero);
            cost += p * (-cos + one);
        }
        row_costs[token] = cost;
    } else if ABSOLUTE_POS < rows + column_costs.len() {
        let code = ABSOLUTE_POS - rows;
        let sample = code / k;
        let j = code % k;
        let base = sample * l * k + j;
        let mut max = dots[base] / tau;
        for n in 1..l {
            max = F::max(max, dots[base + n * k] / tau);
        }
        let mut total = F::new(0.0);
        for n in 0..l {
            total += F::exp(dots[base + n * k] / tau - max);
        }
        let e_norm = code_norms[code];
        let mut cost = F::new(0.0);
        for n in 0..l {
            let at = base + n * k;
            let dot = dots[at];
            let p = F::exp(dot / tau - max) / total;
            backward_plan[at] = p;
            let cos = cosine::<F>(dot, token_norms[sample * l + n], e_norm, zero);
            cost += p * (-cos + one);
        }
        column_costs[code] = cost;
    }
}

/// One thread per sample: `Σ_n r_n / L + Σ_k q_k / K`.
#[cube(launch)]
fn pot_loss_kernel<F: Float>(
    row_costs: &Tensor<F>,
    column_costs: &Tensor<F>,
    loss: &mut Tensor<F>,
    tokens_per_sample: u32,
    code_count: u32,
    #[define(F)] _dtype: ElemType,
) {
    let sample = ABSOLUTE_POS;
    if sample >= loss.len() {
        terminate!();
    }
    let l = tokens_per_sample as usize;
    let k = code_count as usize;
    let mut to_prototypes = F::new(0.0);
    for n in 0..l {
        to_prototypes += row_costs[sample * l + n];
    }
    let mut to_tokens = F::new(0.0);
    for j in 0..k {
        to_tokens += column_costs[sample * k + j];
    }
    loss[sample] =
        to_prototypes / F::cast_from(tokens_per_sample) + to_tokens / F::cast_from(code_count);
}

/// One thread per (sample, token, prototype): the gradient at the dot product `G` and the
/// cosine's share of the token norm's gradient `w = ∂cos · cos` (module docs).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn pot_dots_gradient_kernel<F: Float>(
    dots: &Tensor<F>,
    token_norms: &Tensor<F>,
    code_norms: &Tensor<F>,
    forward_plan: &Tensor<F>,
    backward_plan: &Tensor<F>,
    row_costs: &Tensor<F>,
    column_costs: &Tensor<F>,
    upstream: &Tensor<F>,
    d_dots: &mut Tensor<F>,
    norm_shares: &mut Tensor<F>,
    tokens_per_sample: u32,
    code_count: u32,
    temperature: f32,
    zero_norm: f32,
    #[define(F)] _dtype: ElemType,
) {
    let at = ABSOLUTE_POS;
    if at >= d_dots.len() {
        terminate!();
    }
    let l = tokens_per_sample as usize;
    let k = code_count as usize;
    let token = at / k;
    let sample = token / l;
    let code = sample * k + at % k;
    let zero = F::cast_from(zero_norm);
    let x_norm = F::max(token_norms[token], zero);
    let e_norm = F::max(code_norms[code], zero);
    let dot = dots[at];
    let cos = dot / (x_norm * e_norm);
    let cost = -cos + F::new(1.0);
    let forward = forward_plan[at] / F::cast_from(tokens_per_sample);
    let backward = backward_plan[at] / F::cast_from(code_count);
    let d_logit = forward * (cost - row_costs[token]) + backward * (cost - column_costs[code]);
    let d_cos = -(forward + backward);
    let g = upstream[sample];
    d_dots[at] = g * (d_logit / F::cast_from(temperature) + d_cos / (x_norm * e_norm));
    norm_shares[at] = d_cos * cos;
}

/// One thread per element of `x`: `∂x = Σ_k G e_k − g_b (Σ_k w / X²) x` where the token's norm
/// is above `zero_norm` (else the first term alone).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn pot_input_gradient_kernel<F: Float>(
    through_dots: &Tensor<F>,
    x: &Tensor<F>,
    token_norms: &Tensor<F>,
    share_sums: &Tensor<F>,
    upstream: &Tensor<F>,
    dx: &mut Tensor<F>,
    dim: u32,
    tokens_per_sample: u32,
    zero_norm: f32,
    #[define(F)] _dtype: ElemType,
) {
    let at = ABSOLUTE_POS;
    if at >= dx.len() {
        terminate!();
    }
    let token = at / dim as usize;
    let x_norm = token_norms[token];
    let mut value = through_dots[at];
    if x_norm > F::cast_from(zero_norm) {
        let g = upstream[token / tokens_per_sample as usize];
        value -= g * share_sums[token] / (x_norm * x_norm) * x[at];
    }
    dx[at] = value;
}

/// The POT loss per sample `[B]` of tokens `x [B, L, D]` (tracked: the gradient flows into it)
/// against each sample's prototypes `embeds [B, D, K]` (constants, any layout), at temperature
/// `temperature`, with norms below `zero_norm` clamped to it. `None` when `x` is not an f32
/// tensor tracked by autodiff on a GPU backend without checkpointing, the products run at a
/// half precision, the prototypes are not f32 on the same backend, or the shapes disagree: the
/// caller composes it.
pub fn pot_loss(
    x: &BurnTensor<3>,
    embeds: &BurnTensor<3>,
    temperature: f32,
    zero_norm: f32,
) -> Option<BurnTensor<1>> {
    let [b, l, d] = x.dims();
    let [eb, ed, k] = embeds.dims();
    if products::half_dtype().is_some()
        || [eb, ed] != [b, d]
        || b * l * d * k == 0
        || !tracked_f32_on_gpu(x)
    {
        return None;
    }
    let e = plain_f32(embeds.clone().detach().without_autodiff())?;
    let (x, node) = tracked_parts(x.clone())?;
    if e.device != x.device {
        return None;
    }
    let dots = contiguous(cube(products::matmul(
        to_burn::<3>(x.clone()),
        to_burn::<3>(e.clone()),
    )));
    let new = |shape: Vec<usize>| empty_shaped(&x, shape);
    let (token_norms, code_norms) = (new(vec![b * l]), new(vec![b * k]));
    let (cube_count, cube_dim) = grid(&x, b * l + b * k);
    pot_norms_kernel::launch(
        &x.client,
        cube_count.clone(),
        cube_dim,
        x.clone().into_tensor_arg(),
        e.clone().into_tensor_arg(),
        token_norms.clone().into_tensor_arg(),
        code_norms.clone().into_tensor_arg(),
        d as u32,
        F32,
    );
    let (forward_plan, backward_plan) = (new(vec![b, l, k]), new(vec![b, l, k]));
    let (row_costs, column_costs) = (new(vec![b * l]), new(vec![b * k]));
    pot_plans_kernel::launch(
        &x.client,
        cube_count,
        cube_dim,
        dots.clone().into_tensor_arg(),
        token_norms.clone().into_tensor_arg(),
        code_norms.clone().into_tensor_arg(),
        forward_plan.clone().into_tensor_arg(),
        backward_plan.clone().into_tensor_arg(),
        row_costs.clone().into_tensor_arg(),
        column_costs.clone().into_tensor_arg(),
        l as u32,
        k as u32,
        temperature,
        zero_norm,
        F32,
    );
    let loss = new(vec![b]);
    let (loss_count, loss_dim) = grid(&x, b);
    pot_loss_kernel::launch(
        &x.client,
        loss_count,
        loss_dim,
        row_costs.clone().into_tensor_arg(),
        column_costs.clone().into_tensor_arg(),
        loss.clone().into_tensor_arg(),
        l as u32,
        k as u32,
        F32,
    );
    let op = PotLossOp {
        temperature,
        zero_norm,
    };
    let saved = Saved {
        x,
        prototypes: e,
        dots,
        token_norms,
        code_norms,
        forward_plan,
        backward_plan,
        row_costs,
        column_costs,
    };
    Some(recorded(op, node_array::<1>(vec![node]), saved, loss))
}

/// The autodiff node; its one parent is `x`.
#[derive(Debug)]
struct PotLossOp {
    temperature: f32,
    zero_norm: f32,
}

/// What the backward needs: the forward's inputs and everything it computed on the way.
#[derive(Clone, Debug)]
struct Saved {
    /// `[B, L, D]`, contiguous.
    x: CubeTensor,
    /// `[B, D, K]`, as given.
    prototypes: CubeTensor,
    /// `[B, L, K]`.
    dots: CubeTensor,
    /// Raw (unclamped) norms, `[B·L]` and `[B·K]`.
    token_norms: CubeTensor,
    code_norms: CubeTensor,
    /// `π→` and `π←`, `[B, L, K]`.
    forward_plan: CubeTensor,
    backward_plan: CubeTensor,
    /// `r [B·L]` and `q [B·K]`.
    row_costs: CubeTensor,
    column_costs: CubeTensor,
}

impl Backward<CubeBackend, 1> for PotLossOp {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = contiguous(grads.consume::<CubeBackend>(&ops.node));
        let Some(node) = &ops.parents[0] else {
            return;
        };
        let s = ops.state;
        let [b, l, d] = [
            s.x.meta.shape()[0],
            s.x.meta.shape()[1],
            s.x.meta.shape()[2],
        ];
        let k = s.prototypes.meta.shape()[2];
        let client = s.x.client.clone();
        let new = |shape: Vec<usize>| empty_shaped(&s.x, shape);
        let (d_dots, norm_shares) = (new(vec![b, l, k]), new(vec![b, l, k]));
        let (cube_count, cube_dim) = grid(&s.x, b * l * k);
        pot_dots_gradient_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            s.dots.into_tensor_arg(),
            s.token_norms.clone().into_tensor_arg(),
            s.code_norms.into_tensor_arg(),
            s.forward_plan.into_tensor_arg(),
            s.backward_plan.into_tensor_arg(),
            s.row_costs.into_tensor_arg(),
            s.column_costs.into_tensor_arg(),
            upstream.clone().into_tensor_arg(),
            d_dots.clone().into_tensor_arg(),
            norm_shares.clone().into_tensor_arg(),
            l as u32,
            k as u32,
            self.temperature,
            self.zero_norm,
            F32,
        );
        let share_sums = contiguous(cube(to_burn::<3>(norm_shares).sum_dim(2)));
        let through_dots = contiguous(cube(products::matmul(
            to_burn::<3>(d_dots),
            to_burn::<3>(s.prototypes).swap_dims(1, 2),
        )));
        let dx = new(vec![b, l, d]);
        let (cube_count, cube_dim) = grid(&s.x, b * l * d);
        pot_input_gradient_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            through_dots.into_tensor_arg(),
            s.x.into_tensor_arg(),
            s.token_norms.into_tensor_arg(),
            share_sums.into_tensor_arg(),
            upstream.into_tensor_arg(),
            dx.clone().into_tensor_arg(),
            d as u32,
            l as u32,
            self.zero_norm,
            F32,
        );
        grads.register::<CubeBackend>(node.id, dx);
    }
}
