//! `HVQ_TRAIN_ATTENTION=auto` (`train_attention`, the CLI's and the desktop inspector's
//! default): for each distinct kind of training attention on a GPU, the first call times the
//! fused form (`gpu_attention_autodiff`: the packed projection, the heads' attention and its
//! dropout as one autodiff operation) against the composed form (burn's operations, which the
//! caller builds), forward and backward, on that call's shapes, and the faster computes it and
//! every later attention of the same kind in this process, as `attention_choice` does for
//! inference.
//!
//! Why at run time: neither form is the faster everywhere. The fused form's kernels were written
//! for a GPU (the one-thread-per-row kernels before them took 11.7 ms of an H200's batch-8
//! step), while on lavapipe (a CPU driver) the composed form is faster: a training step of the
//! official model at batch 3 took 13284 ms fused against 8921 ms composed (2026-12-05). A model
//! has a handful of kinds (the encoder's self-attention, the decoder's self- and
//! cross-attention, per batch size), so timing each costs the first training step a few passes
//! of each form. Not on a software adapter (lavapipe, SwiftShader), where the composed form
//! runs untimed.
//!
//! A kind is the device, the number of heads and the inputs' layout: each input's tokens and
//! positional offset (shapes and strides), the packed projection's row blocks it takes, and
//! which inputs are the same tensor (self-attention's tokens given for all three blocks are one
//! parent of the fused operation, one gradient). Each form runs on detached copies of the
//! inputs (leaves of their own, so the timing's backward stops there), its output summed and
//! differentiated: once untimed (compiled; a fused form that does not take the inputs drops out
//! there), then timed as the products are (`product_choice`: growing batches of passes, two
//! rounds taking turns, each kept at its fastest). The timing runs without dropout, so it draws
//! nothing from the device's generator: a training run draws the same masks whether its
//! process timed a kind or took it from the file of kept choices (the dropout mask costs the
//! composed form three element-wise launches more than the fused one, which the timing leaves
//! out). The composed form takes a kind only when it is at least [`MARGIN`] faster, so that
//! noise does not make two processes choose apart on a near tie. The choices are kept in the
//! products' file (`HVQ_PRODUCT_CHOICES`, `product_store`) for later processes of the same
//! build on the same GPU. [`timings`] lists what was measured (`hvq bench` reports it).

use serde::{Deserialize, Serialize};

use super::train_attention::TrainAttention;

/// How much faster (a fraction of the fused form's time) the composed form must be to take a
/// kind of training attention.
pub const MARGIN: f64 = 0.05;

/// One input of a training attention as its kind records it ([`TrainAttentionTiming`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InputLayout {
    /// The tokens' shape `[B, L, E]`.
    pub x: Vec<usize>,
    /// Their strides (elements).
    pub x_strides: Vec<usize>,
    /// The positional offset's shape (`[1, L, E]` or `[B, L, E]`); empty without one.
    pub offset: Vec<usize>,
    /// Its strides; empty without one.
    pub offset_strides: Vec<usize>,
    /// The packed projection's row blocks `[from, to)` it is multiplied with (0: queries, 1:
    /// keys, 2: values).
    pub blocks: Vec<usize>,
    /// Which distinct tensor the tokens are and, with an offset, which the offset is (numbered
    /// in the order first met among the inputs).
    pub sources: Vec<usize>,
}

#[cfg(test)]
impl InputLayout {
    /// An input of the official model's tokens at batch 8 (`[8, 196, 256]`, contiguous) taking
    /// the blocks `[from, to)`, with the positional offset `[1, 196, 256]` when `sources` names
    /// two (the reports' tests).
    pub(crate) fn official(from: usize, to: usize, sources: Vec<usize>) -> Self {
        let with_offset = |v: Vec<usize>| if sources.len() == 2 { v } else { Vec::new() };
        InputLayout {
            x: vec![8, 196, 256],
            x_strides: vec![196 * 256, 256, 1],
            offset: with_offset(vec![1, 196, 256]),
            offset_strides: with_offset(vec![196 * 256, 256, 1]),
            blocks: vec![from, to],
            sources,
        }
    }
}

/// One kind of training attention and what its two forms took ([`timings`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainAttentionTiming {
    /// The device, as burn prints it.
    pub device: String,
    /// Heads the projections are split into.
    pub heads: usize,
    /// The inputs, in order.
    pub inputs: Vec<InputLayout>,
    /// Microseconds per forward and backward pass of the fused form; `None` where it does not
    /// take the inputs.
    pub fused_us: Option<f64>,
    /// Microseconds per forward and backward pass of the composed form.
    pub composed_us: Option<f64>,
    /// What computes this kind: [`TrainAttention::Fused`] or [`TrainAttention::Composed`].
    pub runs_on: TrainAttention,
    /// Read from the file of kept choices (`HVQ_PRODUCT_CHOICES`): timed by an earlier process
    /// of this build on this GPU, not by this one.
    #[serde(default)]
    pub stored: bool,
}

impl TrainAttentionTiming {
    /// Microseconds per pass of the form that computes this kind.
    pub fn chosen_us(&self) -> Option<f64> {
        match self.runs_on {
            TrainAttention::Composed => self.composed_us,
            _ => self.fused_us,
        }
    }

    /// The kind's tokens `[B, L, E]` (the first input's).
    pub fn tokens(&self) -> &[usize] {
        self.inputs.first().map_or(&[], |i| i.x.as_slice())
    }

    /// How the inputs share the packed projection, for a report: each input's blocks, named
    /// by their letters, `+pos` where an offset is added, e.g. `qk+pos v` for self-attention.
    pub fn blocks(&self) -> String {
        self.inputs
            .iter()
            .map(|i| {
                let letters: String = (i.blocks[0]..i.blocks[1])
                    .map(|b| ['q', 'k', 'v'].get(b).copied().unwrap_or('?'))
                    .collect();
                if i.offset.is_empty() {
                    letters
                } else {
                    letters + "+pos"
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The form the times choose: the composed form when it is at least [`MARGIN`] faster than the
/// fused form or the fused form does not take the inputs; the fused form otherwise.
pub fn faster(fused_us: Option<f64>, composed_us: Option<f64>) -> TrainAttention {
    match (fused_us, composed_us) {
        (Some(fused), Some(composed)) if composed < fused * (1.0 - MARGIN) => {
            TrainAttention::Composed
        }
        (None, _) => TrainAttention::Composed,
        _ => TrainAttention::Fused,
    }
}

/// What identifies a kind on an adapter, in the form `product_store` compares: the heads,
/// then each input's shapes, strides, blocks and sources.
pub(super) fn operands<'a>(heads: &'a usize, inputs: &'a [InputLayout]) -> Vec<&'a [usize]> {
    let mut operands: Vec<&[usize]> = vec![std::slice::from_ref(heads)];
    for i in inputs {
        operands.extend([
            i.x.as_slice(),
            &i.x_strides,
            &i.offset,
            &i.offset_strides,
            &i.blocks,
            &i.sources,
        ]);
    }
    operands
}

/// Every kind of training attention timed (or taken from the kept choices) so far in this
/// process, in the order first met.
pub fn timings() -> Vec<TrainAttentionTiming> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return gpu::choices_now().list().to_vec();
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    Vec::new()
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub(super) use gpu::{attention, by_form, keep_choices_in};

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod gpu {
    use std::sync::{LazyLock, Mutex, MutexGuard};

    use burn::backend::autodiff::NodeId;
    use burn::tensor::Tensor;

    use super::{InputLayout, TrainAttention, TrainAttentionTiming, faster, operands};
    use crate::kernels::gpu::tracked_layout;
    use crate::kernels::gpu_attention_autodiff;
    use crate::kernels::timed_choice::{self, time_candidates, timing_on};
    use crate::kernels::{ComposedAttention, ProjectionInput};

    /// The kinds met so far and where choices are kept.
    pub(super) type Choices = timed_choice::Choices<Kind, TrainAttentionTiming, TrainAttention>;

    static CHOICES: LazyLock<Mutex<Choices>> =
        LazyLock::new(|| Mutex::new(Choices::new("training attention")));

    /// The choices, locked (a thread that panicked while holding them left whole entries only).
    pub(super) fn choices_now() -> MutexGuard<'static, Choices> {
        CHOICES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep the choices in `file`, the products' (its path and this build's identity,
    /// `product_store`); `None`: keep nothing. Set with the products'
    /// (`product_choice::keep_choices_in`).
    pub fn keep_choices_in(file: Option<(std::path::PathBuf, String)>) {
        choices_now().keep_in(file);
    }

    /// What makes two training attentions the same kind.
    #[derive(Clone, Debug, PartialEq, Eq, Hash)]
    pub(super) struct Kind {
        device: String,
        pub(super) heads: usize,
        inputs: Vec<InputLayout>,
    }

    impl Kind {
        /// The kind of a training attention on `inputs`; `None` when a tensor is not an f32
        /// tensor tracked by autodiff on a GPU backend (the fused form does not take it and the
        /// caller composes).
        fn of(inputs: &[ProjectionInput], heads: usize) -> Option<Self> {
            let mut sources: Vec<NodeId> = Vec::new();
            let mut source = |node: NodeId| match sources.iter().position(|n| *n == node) {
                Some(at) => at,
                None => {
                    sources.push(node);
                    sources.len() - 1
                }
            };
            let mut layouts = Vec::with_capacity(inputs.len());
            for input in inputs {
                let (x, x_strides, x_node) = tracked_layout(&input.x)?;
                let mut layout = InputLayout {
                    x,
                    x_strides,
                    offset: Vec::new(),
                    offset_strides: Vec::new(),
                    blocks: vec![input.from, input.to],
                    sources: vec![source(x_node)],
                };
                if let Some(offset) = &input.offset {
                    let (shape, strides, node) = tracked_layout(offset)?;
                    layout.offset = shape;
                    layout.offset_strides = strides;
                    layout.sources.push(source(node));
                }
                layouts.push(layout);
            }
            Some(Kind {
                device: format!("{:?}", inputs.first()?.x.device()),
                heads,
                inputs: layouts,
            })
        }

        pub(super) fn operands(&self) -> Vec<&[usize]> {
            operands(&self.heads, &self.inputs)
        }

        fn timing(self, fused_us: Option<f64>, composed_us: Option<f64>) -> TrainAttentionTiming {
            TrainAttentionTiming {
                device: self.device,
                heads: self.heads,
                inputs: self.inputs,
                fused_us,
                composed_us,
                runs_on: faster(fused_us, composed_us),
                stored: false,
            }
        }
    }

    /// The inputs on leaves of their own, detached from the graph they came from: the inputs
    /// `kind` numbers as one source are one leaf, as they are one parent of the fused form.
    fn detached(inputs: &[ProjectionInput], kind: &Kind) -> Vec<ProjectionInput> {
        let mut leaves: Vec<Option<Tensor<3>>> = Vec::new();
        let mut leaf = |t: &Tensor<3>, source: usize| {
            if leaves.len() <= source {
                leaves.resize(source + 1, None);
            }
            leaves[source]
                .get_or_insert_with(|| t.clone().detach().require_grad())
                .clone()
        };
        inputs
            .iter()
            .zip(&kind.inputs)
            .map(|(i, layout)| {
                let x = leaf(&i.x, layout.sources[0]);
                let offset = i.offset.as_ref().map(|o| leaf(o, layout.sources[1]));
                ProjectionInput::new(x, offset, i.from, i.to)
            })
            .collect()
    }

    /// One forward and backward pass of `form` on the detached inputs with dropout `p`;
    /// `false` where the fused form does not take them.
    fn pass(
        form: TrainAttention,
        inputs: &[ProjectionInput],
        (weight, bias): (&Tensor<2>, &Tensor<1>),
        heads: usize,
        p: f64,
        composed: ComposedAttention,
    ) -> bool {
        let out = match form {
            TrainAttention::Composed => Some(composed(inputs, weight, bias, p)),
            _ => by_form(form, inputs, weight, bias, heads, p),
        };
        out.map(|out| drop(out.sum().backward())).is_some()
    }

    /// Training's attention as `form` (fused or composed) computes it: the fused form's result,
    /// or `None` for the composed form (the caller builds it) and where the fused form does not
    /// take the inputs. (`packed_attention_trained` for a form the variable fixes.)
    pub fn by_form(
        form: TrainAttention,
        inputs: &[ProjectionInput],
        weight: &Tensor<2>,
        bias: &Tensor<1>,
        heads: usize,
        p: f64,
    ) -> Option<Tensor<3>> {
        match form {
            TrainAttention::Composed => None,
            _ => gpu_attention_autodiff::attention(inputs, weight, bias, heads, p),
        }
    }

    /// Training's attention with `HVQ_TRAIN_ATTENTION=auto` (module documentation): the fused
    /// form's result where it is chosen for this kind, timed now if the kind was neither met nor
    /// kept before; `None` where the composed form is (the caller builds it; untimed on a
    /// software adapter) or the fused form does not take the inputs.
    pub fn attention(
        inputs: &[ProjectionInput],
        weight: &Tensor<2>,
        bias: &Tensor<1>,
        heads: usize,
        p: f64,
        composed: ComposedAttention,
    ) -> Option<Tensor<3>> {
        let kind = Kind::of(inputs, heads)?;
        let mut known = choices_now();
        if let Some(form) = known.chosen(&kind) {
            drop(known);
            return by_form(form, inputs, weight, bias, heads, p);
        }
        let device = inputs[0].x.device();
        let (physical, adapter) = timing_on(&device, &kind.device)?;
        let kept = known.kept(
            kind.clone(),
            &adapter,
            &kind.device,
            &kind.operands(),
            |t: &TrainAttentionTiming| t.runs_on,
        );
        if let Some(form) = kept {
            drop(known);
            return by_form(form, inputs, weight, bias, heads, p);
        }
        // Timed under the lock, as the products are: one timing per kind, however many threads
        // (devices) train. The fused form drops out at its first pass where it does not take
        // the inputs. Timed without dropout, whose masks would draw from the device's
        // generator; on a software adapter, timed only so that both are compiled (`hvq
        // ptx-check`), with it, so that the kernels compiled are the ones training launches.
        let leaves = detached(inputs, &kind);
        let params = (
            weight.clone().detach().require_grad(),
            bias.clone().detach().require_grad(),
        );
        let p_timed = if physical { 0.0 } else { p };
        let passed = |form| {
            let (leaves, params) = (&leaves, (&params.0, &params.1));
            move || pass(form, leaves, params, heads, p_timed, composed)
        };
        let (fused, composed_pass) = (
            passed(TrainAttention::Fused),
            passed(TrainAttention::Composed),
        );
        let Ok(us) = time_candidates(&device, [&fused, &composed_pass], physical) else {
            // The device could not be waited for: the fused form, untimed, asked again later.
            drop(known);
            return by_form(TrainAttention::Fused, inputs, weight, bias, heads, p);
        };
        let timing = kind.clone().timing(us[0], us[1]);
        let form = timing.runs_on;
        known.timed(kind, &adapter, timing, form);
        drop(known);
        by_form(form, inputs, weight, bias, heads, p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_composed_form_needs_to_win_by_the_margin() {
        use TrainAttention::*;
        assert_eq!(faster(Some(100.0), Some(90.0)), Composed);
        assert_eq!(faster(Some(100.0), Some(96.0)), Fused);
        assert_eq!(faster(Some(100.0), Some(150.0)), Fused);
        assert_eq!(faster(None, Some(150.0)), Composed);
        assert_eq!(faster(Some(100.0), None), Fused);
    }

    #[test]
    fn a_kind_names_its_blocks_and_offsets() {
        let mut t = TrainAttentionTiming {
            device: "DefaultDevice".into(),
            heads: 8,
            inputs: vec![
                InputLayout::official(0, 2, vec![0, 1]),
                InputLayout::official(2, 3, vec![0]),
            ],
            fused_us: Some(100.0),
            composed_us: Some(80.0),
            runs_on: TrainAttention::Composed,
            stored: false,
        };
        assert_eq!(t.blocks(), "qk+pos v");
        assert_eq!(t.tokens(), [8, 196, 256]);
        assert_eq!(t.chosen_us(), Some(80.0));
        t.inputs = vec![
            InputLayout::official(0, 1, vec![0, 1]),
            InputLayout::official(1, 2, vec![2, 1]),
            InputLayout::official(2, 3, vec![2]),
        ];
        assert_eq!(t.blocks(), "q+pos k+pos v");
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod gpu_tests {
    use burn::tensor::{Distribution, Tensor, activation::softmax};

    use super::gpu::choices_now;
    use super::*;
    use crate::device::kernel_profile::KernelProfiler;
    use crate::kernels::gpu::values;
    use crate::kernels::timed_choice::TIME_SOFTWARE_HERE;
    use crate::kernels::{ProjectionInput, gpu_attention_autodiff};

    /// The timings of attentions with `heads` heads (each test uses a count no other does).
    fn timed(heads: usize) -> Vec<TrainAttentionTiming> {
        timings().into_iter().filter(|t| t.heads == heads).collect()
    }

    /// The names of the kernels `f` launched, sorted.
    fn launched(f: impl FnOnce()) -> Vec<String> {
        let profiler = KernelProfiler::start("training attention");
        f();
        let profile = profiler.finish();
        let mut names: Vec<String> = profile.stages[0]
            .names()
            .into_iter()
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// The tensors of one attention of width `4 · heads` over `len` tokens, each tracked:
    /// tokens `a`, `m` `[2, len, E]`, the positional embedding `[1, len, E]`, the packed weight
    /// and bias.
    struct Case {
        a: Tensor<3>,
        m: Tensor<3>,
        pos: Tensor<3>,
        w: Tensor<2>,
        b: Tensor<1>,
        heads: usize,
    }

    impl Case {
        fn new(heads: usize, len: usize) -> Self {
            let device = crate::device::create(crate::device::DeviceChoice::Wgpu)
                .unwrap()
                .autodiff();
            let e = 4 * heads;
            let normal = Distribution::Normal(0.0, 1.0);
            let tokens = |b| Tensor::<3>::random([b, len, e], normal, &device).require_grad();
            Case {
                a: tokens(2),
                m: tokens(2),
                pos: tokens(1),
                w: Tensor::<2>::random([3 * e, e], Distribution::Normal(0.0, 0.3), &device)
                    .require_grad(),
                b: Tensor::<1>::random([3 * e], normal, &device).require_grad(),
                heads,
            }
        }

        /// Self-attention's inputs: `a + pos` for queries and keys, `a` for values.
        fn self_inputs(&self) -> Vec<ProjectionInput> {
            vec![
                ProjectionInput::new(self.a.clone(), Some(self.pos.clone()), 0, 2),
                ProjectionInput::new(self.a.clone(), None, 2, 3),
            ]
        }

        /// Cross-attention's: `a + pos` over `m + pos`, values `m`.
        fn cross_inputs(&self) -> Vec<ProjectionInput> {
            vec![
                ProjectionInput::new(self.a.clone(), Some(self.pos.clone()), 0, 1),
                ProjectionInput::new(self.m.clone(), Some(self.pos.clone()), 1, 2),
                ProjectionInput::new(self.m.clone(), None, 2, 3),
            ]
        }

        /// `auto`'s attention on `inputs`, with [`composed`] as the caller's form.
        fn auto(&self, inputs: &[ProjectionInput], p: f64) -> Option<Tensor<3>> {
            let heads = self.heads;
            let form = move |i: &[ProjectionInput], w: &Tensor<2>, b: &Tensor<1>, p: f64| {
                composed(i, w, b, heads, p)
            };
            gpu::attention(inputs, &self.w, &self.b, heads, p, &form)
        }

        /// The fused form alone.
        fn fused(&self, inputs: &[ProjectionInput], p: f64) -> Option<Tensor<3>> {
            gpu_attention_autodiff::attention(inputs, &self.w, &self.b, self.heads, p)
        }

        /// `out`'s values and the gradients of `out`'s sum for the tokens, the positional
        /// embedding and the packed weight and bias.
        fn results(&self, out: Tensor<3>) -> Vec<Vec<f32>> {
            let grads = out.clone().sum().backward();
            vec![
                values(out),
                values(self.a.grad(&grads).unwrap()),
                values(self.pos.grad(&grads).unwrap()),
                values(self.w.grad(&grads).unwrap()),
                values(self.b.grad(&grads).unwrap()),
            ]
        }
    }

    /// A composed form from burn's operations: the projections, the heads' scaled dot
    /// products, softmax, inverted dropout drawn as a Bernoulli mask, weighted values, heads
    /// merged.
    fn composed(
        inputs: &[ProjectionInput],
        w: &Tensor<2>,
        b: &Tensor<1>,
        heads: usize,
        p: f64,
    ) -> Tensor<3> {
        let [_, e] = w.dims();
        let mut parts = Vec::new();
        for input in inputs {
            let x = match &input.offset {
                Some(o) => input.x.clone() + o.clone(),
                None => input.x.clone(),
            };
            for block in input.from..input.to {
                let wb = w.clone().narrow(0, block * e, e);
                let bb = b.clone().narrow(0, block * e, e).reshape([1, 1, e]);
                parts.push(x.clone().matmul(wb.transpose().unsqueeze::<3>()) + bb);
            }
        }
        let [q, k, v]: [Tensor<3>; 3] = parts.try_into().unwrap();
        let [batch, len, _] = q.dims();
        let d = e / heads;
        let split = |t: Tensor<3>| t.reshape([batch, len, heads, d]).swap_dims(1, 2);
        let scores = split(q).matmul(split(k).swap_dims(2, 3)) / (d as f64).sqrt();
        let mut weights = softmax(scores, 3);
        if p > 0.0 {
            let keep: Tensor<4> = Tensor::random(
                weights.shape(),
                Distribution::Bernoulli(1.0 - p),
                &w.device(),
            );
            weights = weights * keep / (1.0 - p);
        }
        weights
            .matmul(split(v))
            .swap_dims(1, 2)
            .reshape([batch, len, e])
    }

    /// On a software adapter (lavapipe) the composed form runs untimed (`None`: the caller
    /// builds it; nothing launched). Where training attention is timed (here: told to), the
    /// first attention of a kind times both forms once: one entry with both times, the
    /// inputs' layout (self-attention's tokens one source for two inputs) and the margin rule's
    /// choice; that attention and every later one of the kind are computed by the chosen form
    /// (the fused form's values and gradients bit for bit, or `None`), later ones launching
    /// only it. Cross-attention is another kind.
    #[test]
    fn each_kind_of_training_attention_is_timed_once_and_runs_on_the_faster_form() {
        let case = Case::new(2, 9);
        let inputs = case.self_inputs();
        let mut out = None;
        let names = launched(|| out = case.auto(&inputs, 0.0));
        assert!(out.is_none(), "software adapter: composed");
        assert!(names.is_empty(), "{names:?}");
        assert!(timed(2).is_empty(), "untimed: {:?}", timed(2));

        let fused_alone = case.results(case.fused(&inputs, 0.0).unwrap());
        let fused_names = launched(|| drop(case.fused(&inputs, 0.0)));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        let first = case.auto(&inputs, 0.0);
        let entries = timed(2);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let t = &entries[0];
        assert_eq!(t.tokens(), [2, 9, 8]);
        assert_eq!(t.blocks(), "qk+pos v");
        assert_eq!(t.inputs[0].offset, [1, 9, 8]);
        assert_eq!(t.inputs[0].x_strides, [9 * 8, 8, 1]);
        assert_eq!(
            (&t.inputs[0].sources, &t.inputs[1].sources),
            (&vec![0, 1], &vec![0])
        );
        for us in [t.fused_us, t.composed_us] {
            assert!(us.is_some_and(|us| us.is_finite() && us > 0.0), "{t:?}");
        }
        assert_eq!(t.runs_on, faster(t.fused_us, t.composed_us));
        let chosen_fused = t.runs_on == TrainAttention::Fused;
        assert_eq!(first.is_some(), chosen_fused, "{t:?}");
        if let Some(first) = first {
            assert_eq!(case.results(first), fused_alone);
        }

        let mut again = None;
        let names = launched(|| again = case.auto(&inputs, 0.0));
        assert_eq!(again.is_some(), chosen_fused);
        if let Some(again) = again {
            assert_eq!(case.results(again), fused_alone);
        }
        let want_names = if chosen_fused { fused_names } else { vec![] };
        assert_eq!(names, want_names, "only the chosen form");
        assert_eq!(timed(2).len(), 1, "timed once");

        let _ = case.auto(&case.cross_inputs(), 0.0);
        let entries = timed(2);
        assert_eq!(entries.len(), 2, "{entries:?}");
        let t = &entries[1];
        assert_eq!(t.blocks(), "q+pos k+pos v");
        let sources: Vec<&[usize]> = t.inputs.iter().map(|i| i.sources.as_slice()).collect();
        assert_eq!(sources, [&[0, 1][..], &[2, 1], &[2]]);
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
    }

    /// Timing a kind draws nothing from the device's generator: it runs both forms without
    /// dropout (the composed form is handed `p` = 0, and the generator's kernel is launched only
    /// by the chosen form's own attention, once for the fused form's seed), so a training run
    /// draws the same masks whether its process timed the kind or took it from the file.
    #[test]
    fn timing_draws_nothing_from_the_device_s_generator() {
        let _generator = crate::test_rng::lock();
        let case = Case::new(4, 7);
        let inputs = case.self_inputs();
        let draws = |f: &mut dyn FnMut()| -> usize {
            let profiler = KernelProfiler::start("draws");
            f();
            let profile = profiler.finish();
            profile.stages[0]
                .kernels
                .iter()
                .filter(|k| k.name.contains("Random") || k.name.contains("Prng"))
                .map(|k| k.launches)
                .sum()
        };
        // The count can fail: each form's dropout draws.
        assert_eq!(draws(&mut || drop(case.fused(&inputs, 0.1))), 1);
        let heads = case.heads;
        let composed_draws = draws(&mut || drop(composed(&inputs, &case.w, &case.b, heads, 0.1)));
        assert!(composed_draws >= 1, "{composed_draws}");

        let handed = std::sync::Mutex::new(Vec::new());
        let recording = |i: &[ProjectionInput], w: &Tensor<2>, b: &Tensor<1>, p: f64| {
            handed.lock().unwrap().push(p);
            composed(i, w, b, heads, p)
        };
        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        let mut out = None;
        let drawn = draws(&mut || {
            out = gpu::attention(&inputs, &case.w, &case.b, heads, 0.1, &recording);
        });
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        let entries = timed(4);
        assert_eq!(entries.len(), 1, "{entries:?}");
        let fused = entries[0].runs_on == TrainAttention::Fused;
        assert_eq!(out.is_some(), fused);
        let handed = handed.into_inner().unwrap();
        assert!(
            !handed.is_empty() && handed.iter().all(|p| *p == 0.0),
            "{handed:?}"
        );
        assert_eq!(
            drawn,
            usize::from(fused),
            "only the chosen fused form's seed"
        );
    }

    /// With a file of kept choices, a kind timed here is kept in it beside the products; a
    /// process that has not met the kind (here: forgotten, the file read anew) takes it from
    /// the file: the form the file names (an entry edited to the other one runs that one,
    /// nothing timed), marked stored.
    #[test]
    fn kept_training_attention_choices_are_taken_instead_of_timing() {
        let _kept_choices = crate::kernels::product_store::test_file_lock();
        let case = Case::new(6, 5);
        let inputs = case.cross_inputs();
        let dir = std::env::temp_dir().join(format!("hvq-kept-train-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let path = dir.join("choices.json");
        let build = crate::kernels::product_store::this_build().expect("the test's build");
        gpu::keep_choices_in(Some((path.clone(), build.clone())));
        TIME_SOFTWARE_HERE.with(|here| here.set(true));
        let _ = case.auto(&inputs, 0.0);
        let timed_here = timed(6);
        assert_eq!(timed_here.len(), 1);
        assert!(!timed_here[0].stored);

        let mut file: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let entry = file["builds"][0]["train_attention"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|k| k["heads"] == serde_json::json!(6))
            .expect("the kind is kept");
        assert_eq!(
            entry["runs_on"],
            serde_json::json!(timed_here[0].runs_on.name())
        );
        let edited = match timed_here[0].runs_on {
            TrainAttention::Composed => TrainAttention::Fused,
            _ => TrainAttention::Composed,
        };
        entry["runs_on"] = serde_json::json!(edited.name());
        std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();

        choices_now().forget(|kind| kind.heads == 6, |t| t.heads == 6);
        gpu::keep_choices_in(Some((path.clone(), build)));
        let fused_names = launched(|| drop(case.fused(&inputs, 0.0)));
        let mut got = None;
        let names = launched(|| got = case.auto(&inputs, 0.0));
        gpu::keep_choices_in(None);
        TIME_SOFTWARE_HERE.with(|here| here.set(false));
        std::fs::remove_dir_all(&dir).ok();

        match edited {
            TrainAttention::Fused => {
                let want = case.results(case.fused(&inputs, 0.0).unwrap());
                assert_eq!(case.results(got.expect("the fused form")), want);
                assert_eq!(names, fused_names, "taken from the file, not timed");
            }
            _ => {
                assert!(got.is_none(), "the composed form");
                assert!(
                    names.is_empty(),
                    "taken from the file, not timed: {names:?}"
                );
            }
        }
        let entries = timed(6);
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert!(
            entries[0].stored && entries[0].runs_on == edited,
            "{entries:?}"
        );
    }
}
