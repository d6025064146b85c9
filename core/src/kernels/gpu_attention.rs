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

use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::ir::{ElemType, UIntKind};
use cubecl::zspace::metadata::Metadata;
use cubek_attention::forward::definition::{
    AccumulatorPrecision, AttentionGlobalTypes, AttentionOptions,
};
use cubek_attention::forward::launch;

use super::gpu::{F32, plain_f32, to_burn};

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

/// `t [B, L, E]` (its last axis unit-stride) seen as `heads` heads `[B, H, L, E/H]`: the same
/// buffer at other strides (burn's reshape copies a tensor that is not contiguous, as the
/// query and key parts of a packed projection are). `None` when the strides do not allow it
/// with every offset a multiple of the head width (which the kernel's vector loads assume).
fn heads_view(t: &CubeTensor, heads: usize) -> Option<CubeTensor> {
    let shape = t.meta.shape();
    let strides = t.meta.strides();
    if shape.rank() != 3 || strides[2] != 1 || heads == 0 || !shape[2].is_multiple_of(heads) {
        return None;
    }
    let (b, l, e) = (shape[0], shape[1], shape[2]);
    let width = e / heads;
    if !strides[0].is_multiple_of(width) || !strides[1].is_multiple_of(width) {
        return None;
    }
    let mut view = t.clone();
    view.meta = Box::new(Metadata::new(
        [b, heads, l, width],
        [strides[0], width, strides[1], 1],
    ));
    Some(view)
}

/// Multi-head attention on the projections themselves: `q [B, Lq, E]`, `k [B, Lk, E]`,
/// `v [B, Lk, E]` (each may be a strided part of a packed projection, its last axis
/// unit-stride) split into `heads` heads, `softmax(q·kᵀ/√d)·v` per head, the heads merged
/// `[B, Lq, E]`. The kernel reads the heads at their strides and writes each head's output
/// into its columns of the merged result: the three head copies and the merging copy of the
/// composed form are not made. `None` when an input is not a plain f32 tensor of this
/// process's GPU backend, the layout does not allow head views, or the kernel refuses the
/// shape; the caller splits the heads and composes.
pub fn attention_merged(
    q: &BurnTensor<3>,
    k: &BurnTensor<3>,
    v: &BurnTensor<3>,
    heads: usize,
) -> Option<BurnTensor<3>> {
    let (q, k, v) = (
        plain_f32(q.clone())?,
        plain_f32(k.clone())?,
        plain_f32(v.clone())?,
    );
    let [b, lq, e] = [q.meta.shape()[0], q.meta.shape()[1], q.meta.shape()[2]];
    let same_device = k.device == q.device && v.device == q.device;
    if !same_device || k.meta.shape()[2] != e || v.meta.shape()[2] != e {
        return None;
    }
    let out = empty_device_contiguous_dtype(
        q.client.clone(),
        q.device.clone(),
        [b, lq, e].into(),
        q.dtype,
    );
    let (qh, kh, vh, oh) = (
        heads_view(&q, heads)?,
        heads_view(&k, heads)?,
        heads_view(&v, heads)?,
        heads_view(&out, heads)?,
    );
    let types = AttentionGlobalTypes::from_single_float_dtype(F32, ElemType::UInt(UIntKind::U8));
    launch::launch_ref(
        launch::Strategy::Unit(launch::BlueprintStrategy::Inferred(())),
        &q.client,
        qh.binding(),
        kh.binding(),
        vh.binding(),
        None,
        oh.binding(),
        &types,
        AttentionOptions {
            causal: false,
            accumulator_precision: AccumulatorPrecision::Strict(F32),
        },
    )
    .ok()?;
    Some(to_burn(out))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::kernels::gpu::values;

    /// On wgpu, the attention of a packed projection's query, key and value parts (strided
    /// views `[B, L, E]` of one `[B, L, 3E]` tensor), and of a cross attention's separate
    /// tensors, in one launch: bit for bit the heads split into contiguous copies, attended by
    /// the same kernel ([`attention_unit`], checked against f64 below) and merged. Head widths
    /// that do not divide the strides are refused.
    #[test]
    fn attention_on_head_views_equals_the_split_heads() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(17);
        let (b, l, e, h) = (2, 49, 64, 4);
        let split = |t: BurnTensor<3>| {
            let [b, l, e] = t.dims();
            t.reshape([b, l, h, e / h]).swap_dims(1, 2)
        };
        let merge = |t: BurnTensor<4>| {
            let [b, _, l, _] = t.dims();
            t.swap_dims(1, 2).reshape([b, l, e])
        };
        let packed =
            BurnTensor::<3>::random([b, l, 3 * e], Distribution::Normal(0.0, 1.0), &device);
        let part = |i: usize| packed.clone().narrow(2, i * e, e);
        let memory = BurnTensor::<3>::random([b, 23, e], Distribution::Normal(0.0, 1.0), &device);
        for (q, k, v) in [
            (part(0), part(1), part(2)),
            (part(0), memory.clone(), memory.clone().mul_scalar(0.5)),
        ] {
            let _ = values(attention_merged(&q, &k, &v, h).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("attention");
            let got = attention_merged(&q, &k, &v, h).unwrap();
            assert_eq!(profiler.finish().stages[0].launches, 1);
            let want = merge(attention_unit(&split(q), &split(k), &split(v)).unwrap());
            assert_eq!(got.dims(), want.dims());
            let bits = |t: BurnTensor<3>| values(t).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(got), bits(want));
        }
        // 64 = 3·21 + 1: no head width of 3 heads divides it.
        assert!(attention_merged(&part(0), &part(1), &part(2), 3).is_none());
    }

    /// On wgpu, against the f64 attention on the host: the official network's heads (8 of
    /// width 32 over 196 positions; one launch, the flash kernel) and an uneven shape (9 queries
    /// over 13 keys of width 8, which the kernel may hand to burn's composed form): within f32
    /// rounding of sums of `Lk` and `d` terms, plus the `exp` bound, relative to the output's
    /// terms' magnitudes.
    #[test]
    fn flash_attention_gives_the_f64_attention() {
        let _generator = crate::test_rng::lock();
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
