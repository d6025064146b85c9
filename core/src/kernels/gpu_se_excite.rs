//! Squeeze-and-excitation, `sigmoid(W₂·act(W₁·m + b₁) + b₂)` from each sample's channel means
//! `m`, as two GPU kernels (CubeCL: wgpu, CUDA): the squeeze's partial sums, then the
//! excitation.
//!
//! The squeeze is a mean over each channel's h·w pixels (up to 112² in B4's first blocks).
//! burn's reduction, built without its autotuner as hvq is, gives each of the n·c means one
//! thread that walks the whole column: at batch 8 an H200 spent 5.6 ms in the 22 squeezes
//! (2026-12-04 profile), a few hundred threads each waiting on one load after another. Here
//! one thread per sample, channel and block of [`COLUMN_SUM_ROWS`] pixels writes a partial
//! sum (neighbouring threads read neighbouring channels of the channels-last activations),
//! and the excitation kernel adds a sample's blocks up as it starts.
//!
//! Composed, the excitation is two 1×1 convolutions on a `[n, c, 1, 1]` tensor: two matrix
//! products with as many rows as samples (a general product's tiles mostly empty) and two
//! bias-activation kernels, four launches in each of the 22 SE blocks the official B4 backbone
//! runs, for a few hundred thousand multiply-adds. Here one cube of 256 threads
//! (`gpu::CUBE_THREADS`) takes one sample: its threads first add up each channel's partial sums
//! into a mean in shared memory; then each group of [`LANES`] threads sums one reduced channel's
//! products over the channels (neighbouring threads read neighbouring weights), its first
//! thread adds the group's partial sums in order, the bias and the activation, into shared
//! memory; then each thread computes whole gates from the reduced channels there.

use burn::tensor::Tensor as BurnTensor;
use cubecl::prelude::*;

use super::Activation;
use super::gpu::{
    COLUMN_SUM_ROWS, CUBE_THREADS as THREADS, F32, empty_shaped, grid, plain_f32_contiguous,
    to_burn,
};
use super::gpu_activations::{activated, code};

/// Threads summing one reduced channel's products together.
const LANES: usize = 32;

/// The most reduced channels the kernel holds in shared memory (B4's largest SE block reduces
/// to 112); wider ones are composed.
pub(super) const MAX_REDUCED: usize = 512;

/// The most channels whose means the kernel holds in shared memory (B4's widest SE block has
/// 1,632): with the reduced channels and the partial sums 11 KiB, within WebGPU's guaranteed
/// 16 KiB of a cube's shared memory. Wider ones are composed.
pub(super) const MAX_CHANNELS: usize = 2048;

/// `sums [n, blocks, c]`: each sample's, block's and channel's sum over the block's pixels of the
/// channels-last activations `x [n, h·w, c]`.
#[cube(launch)]
fn partial_sums_kernel<F: Float>(
    x: &Tensor<F>,
    sums: &mut Tensor<F>,
    pixels: u32,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= sums.len() {
        terminate!();
    }
    let (blocks, channels) = (sums.shape(1), sums.shape(2));
    let channel = ABSOLUTE_POS % channels;
    let block = (ABSOLUTE_POS / channels) % blocks;
    let sample = ABSOLUTE_POS / (channels * blocks);
    let start = block * COLUMN_SUM_ROWS;
    let mut end = start + COLUMN_SUM_ROWS;
    if end > pixels as usize {
        end = pixels as usize;
    }
    let at = sample * pixels as usize * channels + channel;
    let mut sum = F::new(0.0);
    for p in start..end {
        sum += x[at + p * channels];
    }
    sums[ABSOLUTE_POS] = sum;
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn excite_kernel<F: Float>(
    sums: &Tensor<F>,
    reduce_weight: &Tensor<F>,
    reduce_bias: &Tensor<F>,
    expand_weight: &Tensor<F>,
    expand_bias: &Tensor<F>,
    gate: &mut Tensor<F>,
    pixels: u32,
    #[comptime] hidden_activation: u32,
    #[comptime] gate_activation: u32,
    #[define(F)] _dtype: ElemType,
) {
    let sample = CUBE_POS_X as usize;
    let thread = UNIT_POS_X as usize;
    let (channels, reduced) = (expand_bias.len(), reduce_bias.len());
    let blocks = sums.shape(1);
    let mut means = Shared::<[F]>::new_slice(MAX_CHANNELS);
    let mut partial = Shared::<[F]>::new_slice(THREADS);
    let mut hidden = Shared::<[F]>::new_slice(MAX_REDUCED);
    // The squeeze: channel `k`'s blocks added in order, over the pixels.
    let mut k = thread;
    while k < channels {
        let mut sum = F::new(0.0);
        for block in 0..blocks {
            sum += sums[(sample * blocks + block) * channels + k];
        }
        means[k] = sum / F::cast_from(pixels);
        k += THREADS;
    }
    sync_cube();
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
                sum += reduce_weight[j * channels + k] * means[k];
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

/// The gates `[n, c]` for the activations `x [n, c, h, w]`, laid out channels-last (as the
/// convolutions leave them): their channel means through the reduce convolution
/// (`reduce_weight [r, c, 1, 1]`, `reduce_bias [r]`, then `activation`) and the expand
/// convolution (`expand_weight [c, r, 1, 1]`, `expand_bias [c]`, then the sigmoid), in two
/// launches (three when `x` is not channels-last, or a weight not contiguous: copied first).
/// `None` when a tensor is not a plain f32 tensor of this process's GPU backend, the shapes
/// disagree, or `r` or `c` exceed [`MAX_REDUCED`] or [`MAX_CHANNELS`]; the caller composes it.
pub fn excite(
    x: &BurnTensor<4>,
    reduce: (&BurnTensor<4>, &BurnTensor<1>),
    expand: (&BurnTensor<4>, &BurnTensor<1>),
    activation: Activation,
) -> Option<BurnTensor<2>> {
    let [n, c, h, w] = x.dims();
    let r = reduce.1.dims()[0];
    let fits = n > 0
        && (1..=MAX_CHANNELS).contains(&c)
        && h * w > 0
        && (1..=MAX_REDUCED).contains(&r)
        && reduce.0.dims() == [r, c, 1, 1]
        && expand.0.dims() == [c, r, 1, 1]
        && expand.1.dims() == [c];
    if !fits {
        return None;
    }
    // `[n, h, w, c]` contiguous: the pixels are the rows of each sample's `[h·w, c]`. Other
    // layouts are copied into it (one pass; burn's channel means would be one thread walking
    // each channel of each sample).
    let pixels = plain_f32_contiguous(x.clone().permute([0, 2, 3, 1]))?;
    let reduce_weight = plain_f32_contiguous(reduce.0.clone())?;
    let reduce_bias = plain_f32_contiguous(reduce.1.clone())?;
    let expand_weight = plain_f32_contiguous(expand.0.clone())?;
    let expand_bias = plain_f32_contiguous(expand.1.clone())?;
    let blocks = (h * w).div_ceil(COLUMN_SUM_ROWS);
    let sums = empty_shaped(&pixels, vec![n, blocks, c]);
    let (cube_count, cube_dim) = grid(&sums, n * blocks * c);
    partial_sums_kernel::launch(
        &sums.client,
        cube_count,
        cube_dim,
        pixels.into_tensor_arg(),
        sums.clone().into_tensor_arg(),
        (h * w) as u32,
        F32,
    );
    let gate = empty_shaped(&expand_bias, vec![n, c]);
    excite_kernel::launch(
        &gate.client,
        CubeCount::Static(n as u32, 1, 1),
        CubeDim::new_1d(THREADS as u32),
        sums.into_tensor_arg(),
        reduce_weight.into_tensor_arg(),
        reduce_bias.into_tensor_arg(),
        expand_weight.into_tensor_arg(),
        expand_bias.into_tensor_arg(),
        gate.clone().into_tensor_arg(),
        (h * w) as u32,
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

    /// The excitation in f64 on the host from the activations `x [n, c, h·w]` (NCHW order):
    /// each gate, the sum of its terms' magnitudes through both layers (the scale of its
    /// rounding), and the bound on what the means' own rounding moves it (each mean a sum of
    /// `COLUMN_SUM_ROWS` pixels, then of the blocks: as many roundings of the column's
    /// magnitude, through the weights and the activations' slopes, swish ≤ 1.1, sigmoid ≤ 1/4).
    fn host(
        x: &[f32],
        [n, c, pixels]: [usize; 3],
        w1: &[f32],
        b1: &[f32],
        w2: &[f32],
        b2: &[f32],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let r = b1.len();
        let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
        let additions = (COLUMN_SUM_ROWS + pixels.div_ceil(COLUMN_SUM_ROWS) + 1) as f64;
        let (mut gates, mut scales, mut squeezed) = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..n {
            let column = |k: usize| &x[(s * c + k) * pixels..(s * c + k + 1) * pixels];
            let means: Vec<f64> = (0..c)
                .map(|k| column(k).iter().map(|&v| v as f64).sum::<f64>() / pixels as f64)
                .collect();
            let mean_errors: Vec<f64> = (0..c)
                .map(|k| {
                    let magnitude = column(k).iter().map(|&v| (v as f64).abs()).sum::<f64>();
                    additions * 2f64.powi(-24) * magnitude / pixels as f64
                })
                .collect();
            let mut hidden = Vec::new();
            for j in 0..r {
                let (mut sum, mut magnitude) = (b1[j] as f64, (b1[j] as f64).abs());
                let mut error = 0.0;
                for k in 0..c {
                    let term = w1[j * c + k] as f64 * means[k];
                    sum += term;
                    magnitude += term.abs();
                    error += (w1[j * c + k] as f64 * mean_errors[k]).abs();
                }
                // swish
                hidden.push((sum * sigmoid(sum), magnitude, 1.1 * error));
            }
            for o in 0..c {
                let (mut sum, mut magnitude) = (b2[o] as f64, (b2[o] as f64).abs());
                let mut error = 0.0;
                for (j, (v, m, e)) in hidden.iter().enumerate() {
                    let weight = w2[o * r + j] as f64;
                    sum += weight * v;
                    // A hidden value's own error, through its weight (swish's slope ≤ 1.1).
                    magnitude += (weight * v).abs() + 1.1 * (weight * m).abs();
                    error += (weight * e).abs();
                }
                gates.push(sigmoid(sum));
                scales.push(magnitude);
                squeezed.push(0.25 * error);
            }
        }
        (gates, scales, squeezed)
    }

    /// On wgpu, two launches (the squeeze's partial sums, the excitation) against the f64
    /// squeeze and excitation on the host, for widths below and above a cube's threads and
    /// reduced widths below and above its groups, images of one pixel, of fewer pixels than a
    /// block and of many blocks (B4's first block is 112², 392 blocks): within f32 rounding of
    /// the means (see `host`) and of the sums (each term's magnitude times the terms summed,
    /// c + 2 and r + 2, ·2⁻²⁴, through the sigmoid's slope ≤ 1/4) plus Vulkan's bound on `exp`
    /// (3 + 2|x| ulp, |x| at most the terms' magnitudes) twice. Activations laid out NCHW are
    /// copied channels-last first (one launch more, the same gates).
    #[test]
    fn two_kernels_squeeze_and_excite_as_the_two_layers() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(31);
        for (n, c, r, [h, w]) in [
            (1, 24, 6, [1, 1]),
            (3, 300, 13, [5, 4]),
            (2, 1632, 68, [7, 7]),
            (2, 16, 4, [112, 112]),
        ] {
            let normal = |shape: [usize; 4], mean: f64, sd: f64| {
                Tensor::<4>::random(shape, Distribution::Normal(mean, sd), &device)
            };
            let x = normal([n, c, h, w], 0.5, 1.0);
            let w1 = normal([r, c, 1, 1], 0.0, 1.0 / (c as f64).sqrt());
            let w2 = normal([c, r, 1, 1], 0.0, 1.0 / (r as f64).sqrt());
            let b1 = Tensor::<1>::random([r], Distribution::Normal(0.0, 0.5), &device);
            let b2 = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &device);
            let (want, scale, squeezed) = host(
                &values(x.clone()),
                [n, c, h * w],
                &values(w1.clone()),
                &values(b1.clone()),
                &values(w2.clone()),
                &values(b2.clone()),
            );
            let channels_last = stored_as(x.clone(), [0, 2, 3, 1]);
            let run = || excite(&channels_last, (&w1, &b1), (&w2, &b2), Activation::Swish);
            let _ = values(run().unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("excite");
            let got = run().unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 2);
            assert_eq!(got.dims(), [n, c]);
            // NCHW activations are copied channels-last first: one launch more, the same gates.
            if h * w > 1 {
                let profiler = crate::device::kernel_profile::KernelProfiler::start("excite");
                let from_nchw = excite(&x, (&w1, &b1), (&w2, &b2), Activation::Swish).unwrap();
                assert_eq!(profiler.finish().stages[0].launches, 3);
                assert_eq!(values(from_nchw), values(got.clone()));
            }
            let terms = (c.max(r) + 2) as f64;
            for (i, g) in values(got).iter().enumerate() {
                let rounding = 0.25 * terms * 2f64.powi(-24) * scale[i] + squeezed[i];
                let exp = 2.0 * (5.0 + 2.0 * scale[i]) * 2f64.powi(-23) * want[i];
                let gap = (*g as f64 - want[i]).abs();
                assert!(
                    gap <= rounding + exp,
                    "({n}, {c}, {r}, {h}×{w}) [{i}]: {g} vs {}",
                    want[i]
                );
            }
        }
    }

    /// `kernels::excite` on NCHW activations (which the gate kernel does not take): the gates
    /// computed once by these kernels (the activations copied channels-last first) and applied
    /// by burn's broadcast product: four launches, bit for bit `x · gate`, where it once
    /// computed the gates again in the composed form.
    #[test]
    fn nchw_activations_take_the_gates_once() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(8);
        let (n, c, r, h, w) = (2, 24, 6, 5, 7);
        let normal =
            |shape: [usize; 4]| Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
        let x = normal([n, c, h, w]);
        let (w1, w2) = (normal([r, c, 1, 1]), normal([c, r, 1, 1]));
        let b1 = Tensor::<1>::random([r], Distribution::Normal(0.0, 0.5), &device);
        let b2 = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &device);
        let excitation = || crate::kernels::Excitation {
            reduce_weight: w1.clone(),
            reduce_bias: b1.clone(),
            expand_weight: w2.clone(),
            expand_bias: b2.clone(),
            activation: Activation::Swish,
        };
        let _ = values(crate::kernels::excite(x.clone(), excitation()));
        let profiler = crate::device::kernel_profile::KernelProfiler::start("excite");
        let got = crate::kernels::excite(x.clone(), excitation());
        assert_eq!(profiler.finish().stages[0].launches, 4);
        let gate = excite(&x, (&w1, &b1), (&w2, &b2), Activation::Swish).unwrap();
        let want = x * gate.reshape([n, c, 1, 1]);
        assert_eq!(values(got), values(want));
    }

    /// What the kernels do not take comes back as `None`: a reduced width above
    /// [`MAX_REDUCED`], channels above [`MAX_CHANNELS`], mismatched shapes, the CPU backend.
    #[test]
    fn other_excitations_are_left_to_the_composed_form() {
        let wgpu = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let run = |d: &burn::tensor::Device, c: usize, r: usize, r_expand: usize| {
            let x = Tensor::<4>::ones([2, c, 1, 1], d);
            let w1 = Tensor::<4>::ones([r, c, 1, 1], d);
            let w2 = Tensor::<4>::ones([c, r_expand, 1, 1], d);
            let (b1, b2) = (Tensor::<1>::zeros([r], d), Tensor::<1>::zeros([c], d));
            excite(&x, (&w1, &b1), (&w2, &b2), Activation::Swish)
        };
        assert!(run(&wgpu, 8, 2, 2).is_some());
        assert!(run(&wgpu, 600, MAX_REDUCED + 1, MAX_REDUCED + 1).is_none());
        assert!(run(&wgpu, MAX_CHANNELS, 4, 4).is_some());
        assert!(run(&wgpu, MAX_CHANNELS + 1, 4, 4).is_none());
        assert!(run(&wgpu, 8, 2, 3).is_none());
        assert!(run(&cpu, 8, 2, 2).is_none());
    }
}
