//! What hvq's CubeCL kernels (`gpu_*.rs`) share: taking a tensor from burn's GPU backend, an
//! output buffer, the launch grid and the element type, and handing the result back.

use burn::tensor::Tensor as BurnTensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use cubecl::calculate_cube_count_elemwise;
use cubecl::prelude::*;

/// The element type every kernel here runs at (they take f32 tensors only).
pub(super) const F32: ElemType = ElemType::Float(cubecl::ir::FloatKind::F32);

// A plain f32 tensor of this process's GPU backend as burn holds it (`None` otherwise, and the
// caller composes the operation).
pub(super) use crate::device::gpu_tensor::plain_f32;

/// [`plain_f32`], copied into a contiguous layout when it is not in one.
pub(super) fn plain_f32_contiguous<const D: usize>(t: BurnTensor<D>) -> Option<CubeTensor> {
    plain_f32(t).map(contiguous)
}

/// The kernel element type of an integer tensor's `dtype` (burn's `Int` is 32- or 64-bit by
/// backend); `None` for another.
pub(super) fn index_type(dtype: burn::tensor::DType) -> Option<ElemType> {
    match dtype {
        burn::tensor::DType::I32 => Some(ElemType::Int(cubecl::ir::IntKind::I32)),
        burn::tensor::DType::I64 => Some(ElemType::Int(cubecl::ir::IntKind::I64)),
        _ => None,
    }
}

/// The integer type of `device`'s `Int` tensors, the type burn's own creation takes from the
/// device's settings, read without allocating anything (the kernels allocate their index
/// outputs themselves: burn's `empty` would take the runtime's layout, which on CUDA pads the
/// rows of a tensor of two or more axes, docs/gpu.md, while they write in order).
pub(super) fn int_dtype(device: &burn::tensor::Device) -> burn::tensor::DType {
    device.settings().int_dtype.into()
}

/// Rows one thread sums in the kernels that add a `[rows, columns]` tensor up by column (the
/// training operations' bias and scale gradients): one thread per column over every row would
/// be a few hundred threads walking 196·B rows, a few warps of a large GPU each waiting on one
/// load after another. In blocks of this many rows, 196·B/32 times as many threads write
/// partial sums that one reduction adds up.
pub(super) const COLUMN_SUM_ROWS: usize = 32;

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

/// The distance, in values, between consecutive rows of `t` viewed as `[values / n, n]` (`n` its
/// last axis): `Some` when each row is contiguous and the rows follow one another in order at
/// one distance, as CUDA's pitched allocations lay out the outputs of burn's operations (a row
/// of 24 values padded to 32: distance 32; contiguous tensors give `n`). Kernels that read a
/// row-major `[rows, n]` input take such a tensor as it is, where a copy into a contiguous one
/// would read and write it all once more.
pub(super) fn row_pitch(t: &CubeTensor) -> Option<usize> {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    let rank = shape.len();
    let n = *shape.last()?;
    if n != 1 && strides[rank - 1] != 1 {
        return None;
    }
    // Axes of one value have no say; the innermost other row axis gives the distance.
    let row_axes = || (0..rank - 1).rev().filter(|&a| shape[a] != 1);
    let pitch = row_axes().next().map_or(n, |a| strides[a]);
    if pitch < n {
        return None;
    }
    let mut step = pitch;
    for axis in row_axes() {
        if strides[axis] != step {
            return None;
        }
        step *= shape[axis];
    }
    Some(pitch)
}

/// `t` as rows of its last axis, with the distance between two rows ([`row_pitch`]): as it
/// lies when its rows are evenly spaced (contiguous, or padded apart as CUDA allocates burn's
/// outputs), else copied into a contiguous tensor. What the kernels that read a row-major
/// `[rows, n]` input take.
pub(super) fn rows(t: CubeTensor) -> (CubeTensor, usize) {
    match row_pitch(&t) {
        Some(pitch) => (t, pitch),
        None => {
            let n = t.meta.shape().last().copied().unwrap_or(1);
            (contiguous(t), n)
        }
    }
}

/// Whether `t`'s elements lie contiguously with its axes in the order `axes` (outermost first:
/// `[2, 3, 1, 0]` of an `[o, c, k, k]` weight is `[k, k, c, o]` storage). Axes of size one
/// have no say.
pub(super) fn stored_contiguous<const D: usize>(t: &CubeTensor, axes: [usize; D]) -> bool {
    let (shape, strides) = (t.meta.shape(), t.meta.strides());
    let mut step = 1;
    for &axis in axes.iter().rev() {
        if shape[axis] != 1 && strides[axis] != step {
            return false;
        }
        step *= shape[axis];
    }
    true
}

/// A new contiguous buffer of `t`'s shape and type, on its device.
pub(super) fn empty_like(t: &CubeTensor) -> CubeTensor {
    empty_shaped(t, t.meta.shape().to_vec())
}

/// A new contiguous buffer of shape `shape` and `t`'s type, on its device.
pub(super) fn empty_shaped(t: &CubeTensor, shape: Vec<usize>) -> CubeTensor {
    empty_device_contiguous_dtype(t.client.clone(), t.device.clone(), shape.into(), t.dtype)
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
    empty_device_contiguous_dtype(t.client.clone(), t.device.clone(), [1].into(), t.dtype)
}

/// Threads of the cubes that take one sample each and share their sums in shared memory
/// (`gpu_se_excite`, `gpu_straight_through`): WebGPU's guaranteed limit on a workgroup's size,
/// a power of two (the pairwise sums halve it).
pub(super) const CUBE_THREADS: usize = 256;

/// Threads of a row's cube: a row of the official model's 256 or 512 values is 4 or 8 loads a
/// thread (a power of two, for the pairwise sums).
pub(super) const ROW_THREADS: usize = 64;

/// The launch of one cube of [`ROW_THREADS`] per row of `rows`: past the device's limit on
/// cubes along one axis (65,535 on WebGPU) the cubes spread over a second axis, and the
/// kernels find their row as [`row_of_cube`].
pub(super) fn row_cubes(t: &CubeTensor, rows: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new_1d(ROW_THREADS as u32);
    (
        calculate_cube_count_elemwise(&t.client, rows * ROW_THREADS, cube_dim),
        cube_dim,
    )
}

/// This cube's row and how many of its values the cube handles: `row`, or none for a cube past
/// the last row (a spread launch has some). Such a cube still takes part in every barrier, with
/// nothing to load or write, rather than return early: a barrier must be reached by the whole
/// cube, and WGSL's uniformity analysis cannot prove an early return cube-uniform.
#[cube]
pub(super) fn row_of_cube(rows: u32, row: u32) -> (usize, usize) {
    let r = CUBE_POS;
    let mut n = row as usize;
    if r >= rows as usize {
        n = 0;
    }
    (r, n)
}

/// The cube's `value`s added pairwise in `partial` (its first `threads` slots, a power of
/// two): every thread gets the total. The cube's barriers keep a later call from overwriting
/// what this one's threads still read.
#[cube]
pub(super) fn cube_sum<F: Float>(
    partial: &mut Shared<[F]>,
    thread: usize,
    value: F,
    #[comptime] threads: usize,
) -> F {
    cube_combine::<F>(partial, thread, value, threads, false)
}

/// [`cube_sum`] for the largest of the cube's `value`s.
#[cube]
pub(super) fn cube_max<F: Float>(
    partial: &mut Shared<[F]>,
    thread: usize,
    value: F,
    #[comptime] threads: usize,
) -> F {
    cube_combine::<F>(partial, thread, value, threads, true)
}

/// Half the threads combine the other half's values with theirs, until one is left: a sum, or
/// with `maximum` the largest.
#[cube]
fn cube_combine<F: Float>(
    partial: &mut Shared<[F]>,
    thread: usize,
    value: F,
    #[comptime] threads: usize,
    #[comptime] maximum: bool,
) -> F {
    partial[thread] = value;
    sync_cube();
    #[unroll]
    for level in 1..=threads.trailing_zeros() as usize {
        let width = threads >> level;
        if thread < width {
            let (a, b) = (partial[thread], partial[thread + width]);
            let mut pair = a + b;
            if maximum {
                pair = F::max(a, b);
            }
            partial[thread] = pair;
        }
        sync_cube();
    }
    let total = partial[0];
    sync_cube();
    total
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

/// burn's autodiff over the GPU backend without checkpointing: what the autodiff operations
/// (`gpu_*_autodiff.rs`) take apart and record on ([`tracked_f32_on_gpu`] checks it).
pub(super) type Tracked = burn::backend::autodiff::Autodiff<
    CubeBackend,
    burn::backend::autodiff::checkpoint::strategy::NoCheckpointing,
>;

/// A tracked f32 tensor's GPU value, contiguous (copied if not), and its autodiff node.
pub(super) fn tracked_parts<const D: usize>(
    t: BurnTensor<D>,
) -> Option<(CubeTensor, burn::backend::autodiff::ops::NodeGuard)> {
    tracked_value(t).map(|(inner, node)| (contiguous(inner), node))
}

/// A tracked f32 tensor's GPU value as it lies, in any layout (for burn's own operations, which
/// read strides: a copy would only cost a pass, on CUDA wherever rows are padded), and its
/// autodiff node.
pub(super) fn tracked_value<const D: usize>(
    t: BurnTensor<D>,
) -> Option<(CubeTensor, burn::backend::autodiff::ops::NodeGuard)> {
    let (inner, node) = t.try_into_primitive::<Tracked>().ok()?.into_parts();
    (inner.dtype == burn::tensor::DType::F32).then_some((inner, node))
}

/// A tracked f32 GPU tensor's shape and strides as the backend holds it (not copied) and its
/// autodiff node's identity (the same for every clone); `None` where [`tracked_f32_on_gpu`]
/// is false.
pub(super) fn tracked_layout<const D: usize>(
    t: &BurnTensor<D>,
) -> Option<(Vec<usize>, Vec<usize>, burn::backend::autodiff::NodeId)> {
    if !tracked_f32_on_gpu(t) {
        return None;
    }
    let (inner, node) = t.clone().try_into_primitive::<Tracked>().ok()?.into_parts();
    Some((
        inner.meta.shape().to_vec(),
        inner.meta.strides().to_vec(),
        node.id(),
    ))
}

/// An operation's parent nodes, collected as a list, as the array its [`Backward`] arity takes.
///
/// [`Backward`]: burn::backend::autodiff::ops::Backward
pub(super) fn node_array<const N: usize>(
    nodes: Vec<burn::backend::autodiff::ops::NodeGuard>,
) -> [burn::backend::autodiff::ops::NodeGuard; N] {
    nodes
        .try_into()
        .unwrap_or_else(|_| unreachable!("{N} parent nodes"))
}

/// `op`'s output `out` recorded on the autodiff graph with its parents `nodes` and the state its
/// backward needs (kept only when a parent needs a gradient).
pub(super) fn recorded<O, const N: usize, const D: usize>(
    op: O,
    nodes: [burn::backend::autodiff::ops::NodeGuard; N],
    state: O::State,
    out: CubeTensor,
) -> BurnTensor<D>
where
    O: burn::backend::autodiff::ops::Backward<CubeBackend, N>,
{
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::ops::OpsKind;
    let out = match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    BurnTensor::from_primitive::<Tracked>(out)
}

/// A tensor computed on the GPU backend (inside an operation that only runs there), as burn's
/// backend holds it.
pub(super) fn cube<const D: usize>(t: BurnTensor<D>) -> CubeTensor {
    t.try_into_primitive::<CubeBackend>()
        .unwrap_or_else(|_| unreachable!("computed on the GPU backend"))
}

/// A kernel's output as a burn tensor again.
pub(super) fn to_burn<const D: usize>(t: CubeTensor) -> BurnTensor<D> {
    BurnTensor::from_primitive::<CubeBackend>(t)
}

/// The permutation that undoes `axes` (a tensor's axis `k` stored as axis `axes[k]` of its
/// view: `t.permute(axes).permute(inverse(axes))` is `t`).
pub(super) fn inverse<const D: usize>(axes: [usize; D]) -> [usize; D] {
    let mut back = [0; D];
    for (stored, logical) in axes.into_iter().enumerate() {
        back[logical] = stored;
    }
    back
}

/// `t`'s values copied into a new buffer that stores its axes in the order `axes` (outermost
/// first: `[0, 2, 3, 1]` is channels-last for NCHW), viewed in `t`'s shape again (tests: a
/// kernel's reads at other strides). burn's element-wise operations keep their input's layout,
/// so a reshape does the copy; the layout is checked.
#[cfg(test)]
pub(super) fn stored_as<const D: usize>(t: BurnTensor<D>, axes: [usize; D]) -> BurnTensor<D> {
    let permuted = t.permute(axes);
    let dims = permuted.dims();
    let copied = permuted
        .reshape([dims.iter().product::<usize>()])
        .reshape(dims);
    assert!(
        cube(copied.clone()).is_contiguous(),
        "not stored as {axes:?}"
    );
    copied.permute(inverse(axes))
}

/// `t`'s values in a new buffer whose rows (its last axis) are each followed by `pad` NaNs, viewed
/// in `t`'s shape: the padded rows CUDA gives burn's outputs, on wgpu, which pads none (tests: a
/// kernel taking such a tensor as it lies must skip the padding, and a NaN read shows). `pad`
/// is 64 values, so that the view's end is a whole 256 bytes from the buffer's and burn's slice
/// keeps the buffer (checked).
#[cfg(test)]
pub(super) fn padded_rows<const D: usize>(t: BurnTensor<D>) -> BurnTensor<D> {
    const PAD: usize = 64;
    let mut dims = t.dims();
    let n = dims[D - 1];
    dims[D - 1] = PAD;
    let filler = BurnTensor::<D>::full(dims, f32::NAN, &t.device());
    let view = BurnTensor::cat(vec![t, filler], D - 1).narrow(D - 1, 0, n);
    let pitch = row_pitch(&cube(view.clone()));
    assert_eq!(pitch, Some(n + PAD), "not a view of padded rows");
    view
}

/// A tensor's values on the host (tests).
#[cfg(test)]
pub(super) fn values<const D: usize>(t: BurnTensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Largest `|a − b|` over the largest `|b|` (tests comparing with a composed form).
#[cfg(test)]
pub(crate) fn relative(a: Vec<f32>, b: Vec<f32>) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let gap = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    gap / scale
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;

    /// The row distance of the layouts kernels meet: contiguous tensors (their row length,
    /// axes of one value anywhere), padded rows in two and three axes, and `None` where a row is
    /// not contiguous (a transpose, a channels-last view) or the rows are out of order.
    #[test]
    fn row_pitch_reads_padded_rows_and_refuses_other_layouts() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let pitch = |t: BurnTensor<3>| row_pitch(&cube(t));
        let t = BurnTensor::<3>::ones([2, 3, 5], &device);
        assert_eq!(pitch(t.clone()), Some(5));
        assert_eq!(pitch(BurnTensor::<3>::ones([1, 1, 5], &device)), Some(5));
        assert_eq!(pitch(BurnTensor::<3>::ones([2, 1, 5], &device)), Some(5));
        assert_eq!(pitch(padded_rows(t.clone())), Some(69));
        assert_eq!(
            pitch(padded_rows(BurnTensor::<3>::ones([2, 1, 5], &device))),
            Some(69)
        );
        assert_eq!(pitch(t.clone().swap_dims(1, 2)), None);
        assert_eq!(pitch(t.clone().swap_dims(0, 1)), None);
        assert_eq!(pitch(padded_rows(t).swap_dims(0, 1)), None);
        let nchw = BurnTensor::<4>::ones([2, 3, 4, 5], &device);
        assert_eq!(row_pitch(&cube(nchw.clone().permute([0, 2, 3, 1]))), None);
        assert_eq!(row_pitch(&cube(nchw)), Some(5));
    }
}
