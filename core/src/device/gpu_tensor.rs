//! A tensor as burn's GPU backend holds it, for the code that works on its buffer directly
//! (hvq's kernels, the in-place writes of a recorded pass).

use burn::tensor::Tensor;
use burn_cubecl::CubeBackend;
use burn_cubecl::tensor::CubeTensor;

/// `t` as burn's GPU backend holds it, when it is a plain f32 tensor (not tracked by autodiff) of
/// this process's GPU backend; `None` otherwise.
pub fn plain_f32<const D: usize>(t: Tensor<D>) -> Option<CubeTensor> {
    if t.is_autodiff() || t.dtype() != burn::tensor::DType::F32 {
        return None;
    }
    t.try_into_primitive::<CubeBackend>().ok()
}
