//! Multi-head attention with PyTorch's packed parameters (`in_proj_weight` = [W_q; W_k; W_v]).

use burn::module::{Module, Param};
use burn::tensor::{Device, Distribution, Tensor};

use super::layers::{Linear, dropout};

use crate::kernels::ProjectionInput;
use crate::kernels::products::linear;

/// `nn.MultiheadAttention` (no dropout at inference, no mask), batch-first tensors.
#[derive(Module, Debug)]
pub struct MultiheadAttention {
    /// `(3E, E)`: rows [W_q; W_k; W_v].
    pub in_proj_weight: Param<Tensor<2>>,
    /// `(3E)`.
    pub in_proj_bias: Param<Tensor<1>>,
    /// Output projection.
    pub out_proj: Linear,
    #[module(skip)]
    heads: usize,
}

impl MultiheadAttention {
    /// Xavier-uniform packed projection, zero biases (PyTorch's init).
    pub fn new(embed: usize, heads: usize, device: &Device) -> Self {
        let b = (6.0 / (embed + 3 * embed) as f64).sqrt();
        let mut out_proj = Linear::new(embed, embed, device);
        out_proj.bias = Param::from_tensor(Tensor::zeros([embed], device));
        Self {
            in_proj_weight: Param::from_tensor(Tensor::random(
                [3 * embed, embed],
                Distribution::Uniform(-b, b),
                device,
            )),
            in_proj_bias: Param::from_tensor(Tensor::zeros([3 * embed], device)),
            out_proj,
            heads,
        }
    }

    /// Attention of `query [B, Lq, E]` over `key [B, Lk, E]` / `value [B, Lk, E]` → `[B, Lq, E]`,
    /// with dropout `p` on the attention weights (0 at inference), plus `residual` when given
    /// (added after the output projection's bias, in the kernel after its product on a GPU).
    pub fn forward(
        &self,
        query: Tensor<3>,
        key: Tensor<3>,
        value: Tensor<3>,
        p: f64,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let inputs = [
            ProjectionInput::new(query, None, 0, 1),
            ProjectionInput::new(key, None, 1, 2),
            ProjectionInput::new(value, None, 2, 3),
        ];
        self.attend_inputs(&inputs, p, residual)
    }

    /// Self-attention of `x` whose queries and keys are `x + pos` (the encoder and the decoder's
    /// first block; `pos` `[1, L, E]`): [`Self::forward`]`(x + pos, x + pos, x, p)` with the two
    /// projections as one matrix product of twice the width, as PyTorch's
    /// `nn.MultiheadAttention` does when query is key (fewer, larger products run closer to the
    /// CPU's peak). In training on a GPU one operation takes `x` and `pos` themselves, so that
    /// each gets one gradient (`x`'s one product over all three blocks) rather than one per use
    /// that autodiff then adds up.
    pub fn forward_self(
        &self,
        x: Tensor<3>,
        pos: Tensor<3>,
        p: f64,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let inputs = [
            ProjectionInput::new(x.clone(), Some(pos), 0, 2),
            ProjectionInput::new(x, None, 2, 3),
        ];
        self.attend_inputs(&inputs, p, residual)
    }

    /// Cross-attention of `t` over `memory` with the positional embedding `pos` (`[1, L, E]`) on
    /// both sides (the decoder's second block): [`Self::forward`]`(t + pos, memory + pos,
    /// memory, p)`, both additions in one launch on a GPU. In training on a GPU one operation
    /// takes `t`, `memory` and `pos` themselves (`memory`'s gradient one product over the key
    /// and value blocks, `pos`'s one over the query and key blocks).
    pub fn forward_cross(
        &self,
        t: Tensor<3>,
        memory: Tensor<3>,
        pos: Tensor<3>,
        p: f64,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let inputs = [
            ProjectionInput::new(t, Some(pos.clone()), 0, 1),
            ProjectionInput::new(memory.clone(), Some(pos), 1, 2),
            ProjectionInput::new(memory, None, 2, 3),
        ];
        self.attend_inputs(&inputs, p, residual)
    }

    /// Attention of inputs that together take the packed projection's three blocks, then the
    /// output projection and the residual: in training on a GPU one autodiff operation
    /// ([`crate::kernels::packed_attention_trained`]) where the form chosen is that one, else
    /// the projections and the heads' attention ([`packed_heads`]).
    fn attend_inputs(
        &self,
        inputs: &[ProjectionInput],
        p: f64,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        let (weight, bias) = (self.in_proj_weight.val(), self.in_proj_bias.val());
        let heads = self.heads;
        let composed = |inputs: &[ProjectionInput], w: &Tensor<2>, b: &Tensor<1>, p: f64| {
            packed_heads(inputs, w, b, heads, p)
        };
        let out =
            crate::kernels::packed_attention_trained(inputs, &weight, &bias, heads, p, &composed)
                .unwrap_or_else(|| composed(inputs, &weight, &bias, p));
        self.output(out, residual)
    }

    /// The output projection of the merged heads, plus `residual` when given.
    fn output(&self, out: Tensor<3>, residual: Option<Tensor<3>>) -> Tensor<3> {
        self.out_proj
            .forward_then(out, crate::kernels::Activation::Identity, residual)
    }
}

/// The packed projection's row blocks `[from·E, to·E)` of `weight` `[3E, E]` and `bias` `[3E]`.
fn rows(weight: &Tensor<2>, bias: &Tensor<1>, from: usize, to: usize) -> (Tensor<2>, Tensor<1>) {
    let [e3, _] = weight.dims();
    let e = e3 / 3;
    let w = weight.clone().narrow(0, from * e, (to - from) * e);
    let b = bias.clone().narrow(0, from * e, (to - from) * e);
    (w, b)
}

/// The packed projection's row blocks `[from·E, to·E)` applied to each input's `x + offset`
/// (the offsets added first, in one launch on a GPU: [`crate::kernels::with_offsets`]): burn's
/// `linear` with its bias; on a GPU at inference the products alone and then all their biases in
/// one launch ([`crate::kernels::add_many`], the same additions).
fn project(inputs: &[ProjectionInput], weight: &Tensor<2>, bias: &Tensor<1>) -> Vec<Tensor<3>> {
    let blocks: Vec<(usize, usize)> = inputs.iter().map(|i| (i.from, i.to)).collect();
    let xs = crate::kernels::with_offsets(
        inputs
            .iter()
            .map(|i| (i.x.clone(), i.offset.clone()))
            .collect(),
    );
    if xs.iter().all(crate::kernels::adds_fuse) {
        let pairs = xs
            .into_iter()
            .zip(blocks)
            .map(|(x, (from, to))| {
                let (w, b) = rows(weight, bias, from, to);
                let [n] = b.dims();
                (linear(x, w.transpose(), None), b.reshape([1, 1, n]))
            })
            .collect();
        crate::kernels::add_many(pairs)
    } else {
        xs.into_iter()
            .zip(blocks)
            .map(|(x, (from, to))| {
                let (w, b) = rows(weight, bias, from, to);
                linear(x, w.transpose(), Some(b))
            })
            .collect()
    }
}

/// The heads' attention of inputs that together take the packed projection's three blocks
/// (`weight` `[3E, E]`, `bias` `[3E]`), merged `[B, Lq, E]`, before the output projection: the
/// projections ([`project`]; an input of two blocks, self-attention's `x + pos`, is one product
/// of twice the width, split into queries and keys), then on the CPU one fused operation
/// ([`crate::kernels::fused_attention`]) and elsewhere burn's operations ([`composed_heads`]).
/// Training's composed form on a GPU (`crate::kernels::ComposedAttention`).
fn packed_heads(
    inputs: &[ProjectionInput],
    weight: &Tensor<2>,
    bias: &Tensor<1>,
    heads: usize,
    p: f64,
) -> Tensor<3> {
    let [_, e] = weight.dims();
    let mut parts = Vec::with_capacity(3);
    for (projection, input) in project(inputs, weight, bias).into_iter().zip(inputs) {
        if input.to - input.from == 1 {
            parts.push(projection);
        } else {
            for block in 0..input.to - input.from {
                parts.push(projection.clone().narrow(2, block * e, e));
            }
        }
    }
    let [q, k, v]: [Tensor<3>; 3] = parts
        .try_into()
        .unwrap_or_else(|_| unreachable!("the inputs take the three blocks"));
    if crate::kernels::attention_fuses(&q) {
        crate::kernels::fused_attention(q, k, v, heads, p)
    } else {
        composed_heads(q, k, v, heads, p)
    }
}

/// The attention of every head of `q [B, Lq, E]`, `k`, `v` `[B, Lk, E]`, composed as PyTorch
/// computes it: split the heads, scaled dot products, softmax, dropout, weighted values, heads
/// merged (`[B, Lq, E]`).
fn composed_heads(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize, p: f64) -> Tensor<3> {
    // Inference on a GPU: burn's flash-attention kernel on head views of the projections,
    // writing the merged heads (the scale 1/√d its own).
    if p == 0.0
        && let Some(out) = crate::kernels::gpu_attention_merged(&q, &k, &v, heads)
    {
        return out;
    }
    let [b, lq, e] = q.dims();
    let [_, lk, _] = k.dims();
    let h = heads;
    let hd = e / h;
    let scale = 1.0 / (hd as f32).sqrt();
    let split = |t: Tensor<3>, l: usize| -> Tensor<4> { t.reshape([b, l, h, hd]).swap_dims(1, 2) };
    let q = split(q, lq);
    let k = split(k, lk);
    let v = split(v, lk);
    let merge = |t: Tensor<4>| t.swap_dims(1, 2).reshape([b, lq, e]);
    // The same kernel on copied heads (layouts the head views do not take).
    if p == 0.0
        && let Some(out) = crate::kernels::gpu_attention(&q, &k, &v)
    {
        return merge(out);
    }
    let weights = crate::kernels::attention_weights(q, k.swap_dims(2, 3), scale);
    let attn = dropout(weights, p);
    merge(crate::kernels::products::matmul(attn, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused query/key projection is the same computation as projecting them apart, and the
    /// cross-attention's positional additions are the general form's.
    #[test]
    fn self_and_cross_attention_equal_the_general_form() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        let mha = MultiheadAttention::new(32, 4, &device);
        let random = |b| Tensor::<3>::random([b, 9, 32], Distribution::Default, &device);
        let (x, m, pos) = (random(2), random(2), random(1));
        let gap =
            |a: Tensor<3>, b: Tensor<3>| crate::device::read_back((a - b).abs().max()).unwrap()[0];
        let qk = x.clone() + pos.clone();
        let fused = mha.forward_self(x.clone(), pos.clone(), 0.0, None);
        let apart = mha.forward(qk.clone(), qk, x.clone(), 0.0, None);
        let diff = gap(fused, apart);
        assert!(diff <= 1e-5, "self: {diff}");
        let cross = mha.forward_cross(x.clone(), m.clone(), pos.clone(), 0.0, None);
        let general = mha.forward(x + pos.clone(), m.clone() + pos, m, 0.0, None);
        let diff = gap(cross, general);
        assert_eq!(diff, 0.0, "cross");
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod gpu_training_tests {
    use super::*;

    use crate::device::kernel_profile::{StageKernels, profile};

    fn launches(stage: &StageKernels, name: &str) -> usize {
        stage
            .kernels
            .iter()
            .filter(|k| k.name.starts_with(name))
            .map(|k| k.launches)
            .sum()
    }

    /// Training on wgpu (dropout 0.1, the official widths) runs each attention as the one
    /// autodiff operation (`kernels::packed_attention_trained`): its forward kernel once and its
    /// two backward kernels once each, with no narrow's zero-filled gradient, no slice
    /// assignment and no head copies, in self- and cross-attention; and the tokens and the
    /// positional embedding, each given for several blocks, each get one gradient: no addition
    /// in the backward pass (burn's autodiff adds a tensor's gradients up, one launch per
    /// further use).
    #[test]
    fn training_attention_on_wgpu_is_one_operation_without_copies() {
        let _generator = crate::test_rng::lock();
        let ad = crate::device::create(crate::device::DeviceChoice::Wgpu)
            .unwrap()
            .autodiff();
        let mha = MultiheadAttention::new(256, 8, &ad);
        let x = |b| Tensor::<3>::random([b, 196, 256], Distribution::Default, &ad).require_grad();
        let (a, b, c, pos) = (x(2), x(2), x(2), x(1));
        type Attend<'a> = Box<dyn Fn() -> Tensor<3> + 'a>;
        let cases: [(&str, Attend); 3] = [
            (
                "self",
                Box::new(|| mha.forward_self(a.clone(), pos.clone(), 0.1, None)),
            ),
            (
                "cross",
                Box::new(|| mha.forward_cross(a.clone(), b.clone(), pos.clone(), 0.1, None)),
            ),
            (
                "general",
                Box::new(|| mha.forward(a.clone(), b.clone(), c.clone(), 0.1, None)),
            ),
        ];
        for (name, attend) in cases {
            let (out, forward) = profile("forward", attend);
            let (grads, backward) = profile("backward", || out.sum().backward());
            let (forward, backward) = (&forward.stages[0], &backward.stages[0]);
            assert_eq!(
                launches(forward, "SplitAttentionKernel"),
                1,
                "{name}: {forward:#?}"
            );
            assert_eq!(
                launches(backward, "AttentionQueryGradientKernel"),
                1,
                "{name}"
            );
            assert_eq!(
                launches(backward, "AttentionKeyGradientKernel"),
                1,
                "{name}"
            );
            for stage in [forward, backward] {
                for kernel in ["CopyKernel", "SliceAssignKernel", "PrngKernel | Bernoulli"] {
                    assert_eq!(launches(stage, kernel), 0, "{name}, {kernel}: {stage:#?}");
                }
            }
            // One launch adds the positional embedding to the queries' (and keys') tokens.
            let positional = if name == "general" { 0 } else { 1 };
            assert_eq!(
                launches(forward, "AddManyKernel"),
                positional + 1,
                "{name}: {forward:#?}"
            );
            assert_eq!(launches(forward, "KernelBinop | AddOp"), 0, "{name}");
            assert_eq!(
                launches(backward, "KernelBinop | AddOp"),
                0,
                "{name}: {backward:#?}"
            );
            assert!(a.grad(&grads).is_some(), "{name}");
            assert_eq!(pos.grad(&grads).is_some(), name != "general", "{name}");
            eprintln!(
                "{name}: forward {}, backward {}",
                forward.launches, backward.launches
            );
        }
    }
}
