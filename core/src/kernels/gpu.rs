//! What hvq's CubeCL kernels (`gpu_*.rs`) share: taking a tensor from burn's GPU backend, an
//! output buffer, the launch grid and the element type, and handing the result back.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

/// The element type every kernel here runs at (they take f32 tensors only).
pub(super) const F32: ElemType = ElemType::Float(cubecl::ir::FloatKind::F32);

/// `t` as burn's GPU backend holds it, when it is a plain f32 tensor (not tracked by autodiff) of
/// this process's GPU backend; `None` otherwise, and the caller composes the operation.
pub(super) fn plain_f32<const D: usize>(t: BurnTensor<D>) -> Option<CubeTensor> {
    if t.is_autodiff() || t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    t.try_into_primitive::<CubeBackend>().ok()
}

/// [`plain_f32`], and laid out contiguously (the kernels index it row-major).
pub(super) fn contiguous_f32<const D: usize>(t: BurnTensor<D>) -> Option<CubeTensor> {
    plain_f32(t).filter(CubeTensor::is_contiguous)
}

/// Whether `t` is an f32 tensor tracked by autodiff on this process's GPU backend, without
/// gradient checkpointing: what the autodiff operations (`gpu_*_autodiff.rs`) take (they keep
/// their state rather than recompute it).
pub(super) fn tracked_f32_on_gpu<const D: usize>(t: &BurnTensor<D>) -> bool {
    use burn::backend::GradientCheckpointingStrategy;
    let device = t.device();
    t.is_autodiff()
        && t.dtype() == burn::tensor::DType::F32
        && device.gradient_checkpointing_strategy() == Some(GradientCheckpointingStrategy::Disabled)
        && matches!(
            device.inner().as_dispatch(),
            burn::backend::DispatchDevice::Cube(_)
        )
}

/// `t` laid out contiguously (a copy only when it is not).
pub(super) fn contiguous(t: CubeTensor) -> CubeTensor {
    if t.is_contiguous() {
        t
    } else {
        burn_cubecl::kernel::into_contiguous(t)
    }
}

/// A new contiguous buffer of `t`'s shape and type, on its device.
pub(super) fn empty_like(t: &CubeTensor) -> CubeTensor {
    empty_device_dtype(
        t.client.clone(),
        t.device.clone(),
        t.meta.shape().clone(),
        t.dtype,
    )
}

/// Whether `t`'s device binds `bindings` buffers in one launch (its tensors and the launch's
/// metadata): kernels taking many tensors at once check it and leave the work to burn when not
/// (WebGPU's default allows 8 storage buffers per shader).
pub(super) fn binds(t: &CubeTensor, bindings: u32) -> bool {
    t.client.properties().hardware.max_bindings >= bindings
}

/// A one-element buffer on `t`'s device for a kernel argument the launch does not read (a
/// fixed list of tensor slots, fewer used): allocated, not filled, so no launch.
pub(super) fn unread_slot(t: &CubeTensor) -> CubeTensor {
    empty_device_dtype(t.client.clone(), t.device.clone(), [1].into(), t.dtype)
}

/// Cubes and their size for `units` threads on `t`'s device, one unit of work each.
pub(super) fn grid(t: &CubeTensor, units: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(&t.client, units);
    (
        calculate_cube_count_elemwise(&t.client, units, cube_dim),
        cube_dim,
    )
}

/// Whether `a` and `b` are the same elements of the same device buffer (plain f32 GPU tensors
/// with one memory handle, start offset, shape and strides): one tensor, whatever the clones.
pub(super) fn same_storage<const D: usize>(a: &BurnTensor<D>, b: &BurnTensor<D>) -> bool {
    let (Some(a), Some(b)) = (plain_f32(a.clone()), plain_f32(b.clone())) else {
        return false;
    };
    a.device == b.device
        && a.handle.memory.descriptor().id == b.handle.memory.descriptor().id
        && a.handle.offset_start == b.handle.offset_start
        && a.meta.shape() == b.meta.shape()
        && a.meta.strides() == b.meta.strides()
}

/// A kernel's output as a burn tensor again.
pub(super) fn to_burn<const D: usize>(t: CubeTensor) -> BurnTensor<D> {
    BurnTensor::from_primitive::<CubeBackend>(t)
}

/// A tensor's values on the host (tests).
#[cfg(test)]
pub(super) fn values<const D: usize>(t: BurnTensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}
