//! Many flat tensors written into one zero-padded buffer at given offsets, a few launches in all
//! (CubeCL: wgpu, CUDA).
//!
//! The optimiser updates all parameters together as one flat buffer per quantity
//! (`train::adamw`): every step the gradients and the parameters are gathered into one, the
//! official network's 128 of each. In burn's operations that is one `slice_assign` launch per
//! tensor (256 of the step's 311 optimiser launches). Here one launch takes up to
//! [`PARTS_PER_LAUNCH`] tensors and one thread writes one element of the buffer span they
//! cover: its part's value, or zero in the padding between parts.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use cubecl::prelude::*;

use super::gpu::{F32, binds, contiguous_f32, grid, to_burn, unread_slot};

/// The tensors one launch reads: the kernel's eight input slots (CubeCL takes a fixed list of
/// tensor arguments, each a buffer binding). A launch with fewer parts leaves the rest unread.
pub(super) const PARTS_PER_LAUNCH: usize = 8;

/// Bindings one launch needs: the parts, the output and the launch's metadata.
const BINDINGS: u32 = PARTS_PER_LAUNCH as u32 + 2;

/// `value`, or `part`'s element at `at` when `at` falls in it (`part` starts at `start`).
#[cube]
fn pick<F: Float>(part: &Tensor<F>, start: u32, at: usize, value: F) -> F {
    let start = start as usize;
    let mut out = value;
    if at >= start && at < start + part.len() {
        out = part[at - start];
    }
    out
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn gather_kernel<F: Float>(
    p0: &Tensor<F>,
    p1: &Tensor<F>,
    p2: &Tensor<F>,
    p3: &Tensor<F>,
    p4: &Tensor<F>,
    p5: &Tensor<F>,
    p6: &Tensor<F>,
    p7: &Tensor<F>,
    starts: Sequence<u32>,
    flat: &mut Tensor<F>,
    base: u32,
    span: u32,
    #[define(F)] _dtype: ElemType,
) {
    if ABSOLUTE_POS >= span as usize {
        terminate!();
    }
    let count = comptime!(starts.len());
    let at = base as usize + ABSOLUTE_POS;
    let mut value = F::new(0.0);
    value = pick(p0, starts[0], at, value);
    if comptime!(count > 1) {
        value = pick(p1, starts[1], at, value);
    }
    if comptime!(count > 2) {
        value = pick(p2, starts[2], at, value);
    }
    if comptime!(count > 3) {
        value = pick(p3, starts[3], at, value);
    }
    if comptime!(count > 4) {
        value = pick(p4, starts[4], at, value);
    }
    if comptime!(count > 5) {
        value = pick(p5, starts[5], at, value);
    }
    if comptime!(count > 6) {
        value = pick(p6, starts[6], at, value);
    }
    if comptime!(count > 7) {
        value = pick(p7, starts[7], at, value);
    }
    flat[at] = value;
}

/// [`super::gather_flat`] on a GPU backend: `parts` (flat, contiguous, `(offset, tensor)` in
/// increasing offset order, not overlapping) written into a new buffer of `total` elements,
/// zero elsewhere. `None` when a part is not a plain contiguous f32 tensor of this process's GPU
/// backend, or the parts are out of order or past `total`; the caller composes it.
pub fn gather(parts: &[(usize, BurnTensor<1>)], total: usize) -> Option<BurnTensor<1>> {
    let mut tensors = Vec::with_capacity(parts.len());
    let mut end = 0;
    for (offset, part) in parts {
        let t = contiguous_f32(part.clone())?;
        let n = t.meta.shape()[0];
        if *offset < end || offset + n > total || u32::try_from(offset + n).is_err() {
            return None;
        }
        end = offset + n;
        tensors.push((*offset, t));
    }
    let first = &tensors.first()?.1;
    let client = first.client.clone();
    if tensors.iter().any(|(_, t)| t.device != first.device) || !binds(first, BINDINGS) {
        return None;
    }
    let flat = empty_device_contiguous_dtype(
        client.clone(),
        first.device.clone(),
        [total].into(),
        first.dtype,
    );
    // Slots past a launch's parts: the kernel never reads them.
    let unused = unread_slot(first);
    let chunks: Vec<_> = tensors.chunks(PARTS_PER_LAUNCH).collect();
    for (c, chunk) in chunks.iter().enumerate() {
        // Each launch writes from its first part's start (0 for the first) to the next launch's
        // first start (`total` for the last): its parts and the padding after each.
        let base = if c == 0 { 0 } else { chunk[0].0 };
        let stop = chunks.get(c + 1).map_or(total, |next| next[0].0);
        let span = stop - base;
        if span == 0 {
            continue;
        }
        let mut starts = SequenceArg::<u32>::new();
        let mut slots = Vec::with_capacity(PARTS_PER_LAUNCH);
        for (offset, t) in chunk.iter() {
            starts.push(*offset as u32);
            slots.push(t.clone().into_tensor_arg());
        }
        while slots.len() < PARTS_PER_LAUNCH {
            slots.push(unused.clone().into_tensor_arg());
        }
        let [p0, p1, p2, p3, p4, p5, p6, p7]: [TensorArg; PARTS_PER_LAUNCH] =
            slots.try_into().ok()?;
        let (cube_count, cube_dim) = grid(&flat, span);
        gather_kernel::launch(
            &client,
            cube_count,
            cube_dim,
            p0,
            p1,
            p2,
            p3,
            p4,
            p5,
            p6,
            p7,
            starts,
            flat.clone().into_tensor_arg(),
            base as u32,
            span as u32,
            F32,
        );
    }
    Some(to_burn(flat))
}

/// [`super::stack_on_gpu`]: `parts` stacked along a new first axis through [`gather`], eight a
/// launch; `None` unless every part is a plain contiguous f32 tensor of this process's GPU
/// backend (checked before anything is launched: a refused part costs no copy) and of one shape.
pub fn stack<const D: usize, const E: usize>(parts: &[BurnTensor<D>]) -> Option<BurnTensor<E>> {
    let dims = parts.first()?.dims();
    let fits = E == D + 1
        && parts
            .iter()
            .all(|p| p.dims() == dims && contiguous_f32(p.clone()).is_some());
    if !fits {
        return None;
    }
    let n: usize = dims.iter().product();
    // Contiguous parts: their flat views are views, not copies.
    let flat: Vec<(usize, BurnTensor<1>)> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| (i * n, p.clone().reshape([n])))
        .collect();
    let stacked = gather(&flat, parts.len() * n)?;
    let mut shape = [parts.len(); E];
    shape[1..].copy_from_slice(&dims);
    Some(stacked.reshape(shape))
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::values;

    /// On wgpu, 37 tensors of assorted lengths at padded offsets, with padding
    /// before the first and after the last: each element is its part's value, bit for bit, or
    /// zero; ⌈37 / 8⌉ launches. Parts out of order are refused.
    #[test]
    fn many_tensors_land_at_their_offsets_in_few_launches() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(5);
        let lengths: Vec<usize> = (0..37).map(|i| (i * 37 + 11) % 300 + 1).collect();
        let mut offset = 3;
        let mut parts = Vec::new();
        for &n in &lengths {
            parts.push((
                offset,
                Tensor::<1>::random([n], Distribution::Uniform(1.0, 2.0), &device),
            ));
            offset += n + n % 5;
        }
        let total = offset + 9;
        let _ = gather(&parts, total).unwrap();
        let profiler = crate::device::kernel_profile::KernelProfiler::start("gather");
        let flat = gather(&parts, total).unwrap();
        let launches = profiler.finish().stages[0].launches;
        assert_eq!(launches, 37usize.div_ceil(PARTS_PER_LAUNCH));

        let mut want = vec![0f32; total];
        for (offset, part) in &parts {
            let v = values(part.clone());
            want[*offset..offset + v.len()].copy_from_slice(&v);
        }
        let got = values(flat);
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );

        let swapped = vec![parts[1].clone(), parts[0].clone()];
        assert!(gather(&swapped, total).is_none());
        let (last, part) = parts.last().unwrap();
        let end = last + part.dims()[0];
        assert!(gather(&parts, end).is_some());
        assert!(gather(&parts, end - 1).is_none());
    }
}
