//! Multi-head attention `softmax(q·kᵀ/√d)·v` as burn's flash-attention kernel on the GPU
//! backends, for inference.
//!
//! Composed from burn operations, one attention is some eight launches: the heads' layouts
//! copied for the two matrix products, the products, the softmax, and the scores materialised
//! in between (`[B, H, L, L]`). burn 0.22 ships a flash-attention kernel (cubek-attention: the
//! scores kept in registers, the softmax computed online, f32 accumulators), but reaches it only
//! through its autotuner, which hvq's build leaves out; without it burn runs the composed form.
//! Its "unit" variant (f32 products, no tensor cores) is called here directly. Where it cannot
//! launch on a shape it falls back to burn's composed form itself.

use burn::tensor::Tensor as BurnTensor;
use burn::tensor::ops::AttentionModuleOptions;
use burn_cubecl::kernel::attention::{AttentionStrategy, attention};

use super::gpu::{plain_f32, to_burn};

/// `softmax(q·kᵀ/√d)·v` for `q [B, H, Lq, d]`, `k [B, H, Lk, d]`, `v [B, H, Lk, dv]` (the scale
/// `1/√d` is the kernel's own); `None` when they are not plain f32 tensors of this process's
/// GPU backend, and the caller composes it.
pub fn attention_unit(
    q: &BurnTensor<4>,
    k: &BurnTensor<4>,
    v: &BurnTensor<4>,
) -> Option<BurnTensor<4>> {
    let (q, k, v) = (
        plain_f32(q.clone())?,
        plain_f32(k.clone())?,
        plain_f32(v.clone())?,
    );
    let out = attention(
        q,
        k,
        v,
        None,
        None,
        AttentionModuleOptions::default(),
        AttentionStrategy::FlashUnit,
    )
    .ok()?;
    Some(to_burn(out))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::kernels::gpu::values;

    /// On wgpu, against the f64 attention on the host: the official network's heads (8 of
    /// width 32 over 196 positions; one launch, the flash kernel) and an uneven shape (9 queries
    /// over 13 keys of width 8, which the kernel may hand to burn's composed form): within f32
    /// rounding of sums of `Lk` and `d` terms, plus the `exp` bound, relative to the output's
    /// terms' magnitudes.
    #[test]
    fn flash_attention_gives_the_f64_attention() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        for (b, h, lq, lk, d, one_launch) in [(2, 8, 196, 196, 32, true), (1, 2, 9, 13, 8, false)] {
            let t = |l: usize| {
                BurnTensor::<4>::random([b, h, l, d], Distribution::Normal(0.0, 1.5), &device)
            };
            let (q, k, v) = (t(lq), t(lk), t(lk));
            let _ = values(attention_unit(&q, &k, &v).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("attention");
            let got = attention_unit(&q, &k, &v).unwrap();
            let profile = profiler.finish();
            if one_launch {
                assert_eq!(profile.stages[0].launches, 1, "{profile:#?}");
            }
            assert_eq!(got.dims(), [b, h, lq, d]);
            let (qv, kv, vv, gv) = (values(q), values(k), values(v), values(got));
            let scale = 1.0 / (d as f64).sqrt();
            for bh in 0..b * h {
                for i in 0..lq {
                    let row = &qv[(bh * lq + i) * d..(bh * lq + i + 1) * d];
                    let scores: Vec<f64> = (0..lk)
                        .map(|j| {
                            let key = &kv[(bh * lk + j) * d..(bh * lk + j + 1) * d];
                            scale
                                * row
                                    .iter()
                                    .zip(key)
                                    .map(|(a, b)| *a as f64 * *b as f64)
                                    .sum::<f64>()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = e.iter().sum();
                    for c in 0..d {
                        let (mut want, mut magnitude) = (0.0, 0.0);
                        for j in 0..lk {
                            let term = e[j] / total * vv[(bh * lk + j) * d + c] as f64;
                            want += term;
                            magnitude += term.abs();
                        }
                        let worst_score =
                            scores.iter().map(|s| (s - max).abs()).fold(0.0, f64::max);
                        let bound = (lk as f64 + d as f64 + 10.0 + 2.0 * worst_score)
                            * 2f64.powi(-23)
                            * magnitude
                            + 1e-6;
                        let g = gv[(bh * lq + i) * d + c] as f64;
                        assert!((g - want).abs() <= bound, "[{bh},{i},{c}]: {g} vs {want}");
                    }
                }
            }
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        let x = BurnTensor::<4>::ones([1, 1, 4, 8], &cpu);
        assert!(attention_unit(&x, &x, &x).is_none());
        let on_gpu = BurnTensor::<4>::ones([1, 1, 4, 8], &device).autodiff();
        assert!(attention_unit(&on_gpu, &on_gpu, &on_gpu).is_none());
    }
}
