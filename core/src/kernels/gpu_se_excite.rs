//! Squeeze-and-excitation's excitation, `sigmoid(W₂·act(W₁·m + b₁) + b₂)` from each sample's
//! channel means `m`, as one GPU kernel (CubeCL: wgpu, CUDA).
//!
//! Composed, it is two 1×1 convolutions on a `[n, c, 1, 1]` tensor: two matrix products with as
//! many rows as samples (a general product's tiles mostly empty) and two bias-activation
//! kernels, four launches in each of the 22 SE blocks the official B4 backbone runs, for a few
//! hundred thousand multiply-adds. Here one cube of 256 threads (`gpu::CUBE_THREADS`) takes one
//! sample: each group of [`LANES`] threads sums one reduced channel's products over the channels
//! (neighbouring threads read neighbouring weights), its first thread adds the group's partial
//! sums in order, the bias and the activation, into shared memory; then each thread computes
//! whole gates from the reduced channels there.

use burn::tensor::Tensor as BurnTensor;
use cubecl::prelude::*;

use super::Activation;
use super::gpu::{CUBE_THREADS as THREADS, F32, contiguous_f32, empty_shaped, plain_f32, to_burn};
use super::gpu_activations::{activated, code};

/// Threads summing one reduced channel's products together.
const LANES: usize = 32;

/// The most reduced channels the kernel holds in shared memory (B4's largest SE block reduces
/// to 112); wider ones are composed.
pub(super) const MAX_REDUCED: usize = 512;

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn excite_kernel<F: Float>(
    means: &Tensor<F>,
    reduce_weight: &Tensor<F>,
    reduce_bias: &Tensor<F>,
    expand_weight: &Tensor<F>,
    expand_bias: &Tensor<F>,
    gate: &mut Tensor<F>,
    #[comptime] hidden_activation: u32,
    #[comptime] gate_activation: u32,
    #[define(F)] _dtype: ElemType,
) {
    let sample = CUBE_POS_X as usize;
    let thread = UNIT_POS_X as usize;
    let (channels, reduced) = (expand_bias.len(), reduce_bias.len());
    // `means [n, c, 1, 1]` at its own strides (the squeeze leaves it channels-last).
    let at = sample * means.stride(0);
    let step = means.stride(1);
    let mut partial = Shared::<[F]>::new_slice(THREADS);
    let mut hidden = Shared::<[F]>::new_slice(MAX_REDUCED);
    let groups = THREADS / LANES;
    let (group, lane) = (thread / LANES, thread % LANES);
    // Reduced channel `j` (weights `[r, c]`): group `j mod groups` in round `j / groups`. Every
    // thread runs every round: the barriers are the whole cube's.
    let rounds = reduced.div_ceil(groups);
    for round in 0..rounds {
        let j = round * groups + group;
        let mut sum = F::new(0.0);
        if j < reduced {
            let mut k = lane;
            while k < channels {
                sum += reduce_weight[j * channels + k] * means[at + k * step];
                k += LANES;
            }
        }
        partial[thread] = sum;
        sync_cube();
        if lane == 0 && j < reduced {
            let mut total = F::new(0.0);
            for l in 0..LANES {
                total += partial[thread + l];
            }
            hidden[j] = activated::<F>(total + reduce_bias[j], hidden_activation);
        }
        sync_cube();
    }
    // Gate `o` (weights `[c, r]`) from the reduced channels.
    let mut o = thread;
    while o < channels {
        let mut sum = F::new(0.0);
        for j in 0..reduced {
            sum += expand_weight[o * reduced + j] * hidden[j];
        }
        gate[sample * channels + o] = activated::<F>(sum + expand_bias[o], gate_activation);
        o += THREADS;
    }
}

/// The gates `[n, c]` for the channel means `means [n, c, 1, 1]` (any layout) through the reduce
/// convolution (`reduce_weight [r, c, 1, 1]`, `reduce_bias [r]`, then `activation`) and the
/// expand convolution (`expand_weight [c, r, 1, 1]`, `expand_bias [c]`, then the sigmoid), in one
/// launch. `None` when a tensor is not a plain f32 tensor of this process's GPU backend (the
/// weights and biases contiguous), the shapes disagree or `r` exceeds [`MAX_REDUCED`]; the caller
/// composes it.
pub fn excite(
    means: &BurnTensor<4>,
    reduce: (&BurnTensor<4>, &BurnTensor<1>),
    expand: (&BurnTensor<4>, &BurnTensor<1>),
    activation: Activation,
) -> Option<BurnTensor<2>> {
    let [n, c, h, w] = means.dims();
    let r = reduce.1.dims()[0];
    let fits = n > 0
        && c > 0
        && (h, w) == (1, 1)
        && (1..=MAX_REDUCED).contains(&r)
        && reduce.0.dims() == [r, c, 1, 1]
        && expand.0.dims() == [c, r, 1, 1]
        && expand.1.dims() == [c];
    if !fits {
        return None;
    }
    let means = plain_f32(means.clone())?;
    let reduce_weight = contiguous_f32(reduce.0.clone())?;
    let reduce_bias = contiguous_f32(reduce.1.clone())?;
    let expand_weight = contiguous_f32(expand.0.clone())?;
    let expand_bias = contiguous_f32(expand.1.clone())?;
    let gate = empty_shaped(&expand_bias, vec![n, c]);
    excite_kernel::launch(
        &gate.client,
        CubeCount::Static(n as u32, 1, 1),
        CubeDim::new_1d(THREADS as u32),
        means.into_tensor_arg(),
        reduce_weight.into_tensor_arg(),
        reduce_bias.into_tensor_arg(),
        expand_weight.into_tensor_arg(),
        expand_bias.into_tensor_arg(),
        gate.clone().into_tensor_arg(),
        code(activation),
        code(Activation::Sigmoid),
        F32,
    );
    Some(to_burn(gate))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::{stored_as, values};

    /// The excitation in f64 on the host: each gate, and the sum of its terms' magnitudes
    /// through both layers (the scale of its rounding).
    fn host(
        means: &[f32],
        [n, c]: [usize; 2],
        w1: &[f32],
        b1: &[f32],
        w2: &[f32],
        b2: &[f32],
    ) -> (Vec<f64>, Vec<f64>) {
        let r = b1.len();
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let (mut gates, mut scales) = (Vec::new(), Vec::new());
        for s in 0..n {
            let mut hidden = Vec::new();
            for j in 0..r {
                let (mut sum, mut magnitude) = (b1[j] as f64, (b1[j] as f64).abs());
                for k in 0..c {
                    let term = w1[j * c + k] as f64 * means[s * c + k] as f64;
                    sum += term;
                    magnitude += term.abs();
                }
                // swish
                hidden.push((sum * sigmoid(sum), magnitude));
            }
            for o in 0..c {
                let (mut sum, mut magnitude) = (b2[o] as f64, (b2[o] as f64).abs());
                for (j, (v, m)) in hidden.iter().enumerate() {
                    let weight = w2[o * r + j] as f64;
                    sum += weight * v;
                    // A hidden value's own error, through its weight (swish's slope ≤ 1.1).
                    magnitude += (weight * v).abs() + 1.1 * (weight * m).abs();
                }
                gates.push(sigmoid(sum));
                scales.push(magnitude);
            }
        }
        (gates, scales)
    }

    /// On wgpu, one launch against the f64 excitation on the host, for widths below and above a
    /// cube's threads and reduced widths below and above its groups, means laid out NCHW and
    /// channels-last: within f32 rounding of the sums (each term's magnitude times the terms
    /// summed, c + 2 and r + 2, ·2⁻²⁴, through the sigmoid's slope ≤ 1/4) plus Vulkan's bound on
    /// `exp` (3 + 2|x| ulp, |x| at most the terms' magnitudes) twice.
    #[test]
    fn one_kernel_excites_as_the_two_layers() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(31);
        for (n, c, r) in [(1, 24, 6), (3, 300, 13), (2, 1632, 68)] {
            let normal = |shape: [usize; 4], sd: f64| {
                Tensor::<4>::random(shape, Distribution::Normal(0.0, sd), &device)
            };
            let means = normal([n, c, 1, 1], 1.0);
            let w1 = normal([r, c, 1, 1], 1.0 / (c as f64).sqrt());
            let w2 = normal([c, r, 1, 1], 1.0 / (r as f64).sqrt());
            let b1 = Tensor::<1>::random([r], Distribution::Normal(0.0, 0.5), &device);
            let b2 = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &device);
            let (want, scale) = host(
                &values(means.clone()),
                [n, c],
                &values(w1.clone()),
                &values(b1.clone()),
                &values(w2.clone()),
                &values(b2.clone()),
            );
            for layout in [means.clone(), stored_as(means.clone(), [0, 2, 3, 1])] {
                let run = || excite(&layout, (&w1, &b1), (&w2, &b2), Activation::Swish).unwrap();
                let _ = values(run());
                let profiler = crate::device::kernel_profile::KernelProfiler::start("excite");
                let got = run();
                assert_eq!(profiler.finish().stages[0].launches, 1);
                assert_eq!(got.dims(), [n, c]);
                let terms = (c.max(r) + 2) as f64;
                for (i, g) in values(got).iter().enumerate() {
                    let rounding = 0.25 * terms * 2f64.powi(-24) * scale[i];
                    let exp = 2.0 * (5.0 + 2.0 * scale[i]) * 2f64.powi(-23) * want[i];
                    let gap = (*g as f64 - want[i]).abs();
                    assert!(
                        gap <= rounding + exp,
                        "({n}, {c}, {r}) [{i}]: {g} vs {}",
                        want[i]
                    );
                }
            }
        }
    }

    /// What the kernel does not take comes back as `None`: a reduced width above
    /// [`MAX_REDUCED`], mismatched shapes, means that are not `[n, c, 1, 1]`, the CPU backend.
    #[test]
    fn other_excitations_are_left_to_the_composed_form() {
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let run = |d: &burn::tensor::Device, c: usize, r: usize, hw: usize, r_expand: usize| {
            let means = Tensor::<4>::ones([2, c, hw, hw], d);
            let w1 = Tensor::<4>::ones([r, c, 1, 1], d);
            let w2 = Tensor::<4>::ones([c, r_expand, 1, 1], d);
            let (b1, b2) = (Tensor::<1>::zeros([r], d), Tensor::<1>::zeros([c], d));
            excite(&means, (&w1, &b1), (&w2, &b2), Activation::Swish)
        };
        assert!(run(&wgpu, 8, 2, 1, 2).is_some());
        assert!(run(&wgpu, 600, MAX_REDUCED + 1, 1, MAX_REDUCED + 1).is_none());
        assert!(run(&wgpu, 8, 2, 1, 3).is_none());
        assert!(run(&wgpu, 8, 2, 2, 2).is_none());
        assert!(run(&cpu, 8, 2, 1, 2).is_none());
    }
}
