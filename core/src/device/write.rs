//! Host values written into a GPU tensor's own buffer, in place.
//!
//! A recorded graph of launches ([`crate::replay`]) reads its input from the buffer it read when
//! it was recorded; uploading the next batch as a new tensor would leave the graph reading the
//! old one. cubecl's `write` queues the copy on the writing thread's stream, so it lands after
//! the launches queued before it and before those queued after (a replay included).

use burn::tensor::Tensor;

use crate::error::{HvqError, Result};

/// Overwrite `target`'s elements with `values` (row-major, as many as it has), in its own device
/// buffer. Only a plain, contiguous f32 tensor of a GPU backend can be written so; anything
/// else is an error naming what it is.
pub fn write_in_place<const D: usize>(target: &Tensor<D>, values: &[f32]) -> Result<()> {
    let elements: usize = target.dims().iter().product();
    if values.len() != elements {
        return Err(HvqError::Config(format!(
            "writing {} values into a tensor of shape {:?} ({elements} elements)",
            values.len(),
            target.dims()
        )));
    }
    gpu_write(target, values)
}

/// `t`, or a copy of it, stored contiguously in row-major order, so that [`write_in_place`] can
/// write it. On CUDA a new tensor's rows may be padded to an aligned pitch (cubecl's pitched
/// layout: a `[.., 224]` f32 tensor's rows 256 values apart), which a write of the values in
/// order would not fill right; wgpu and the CPU store every tensor without padding.
pub fn writable<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    if let Some(cube) = super::gpu_tensor::plain_f32(t.clone()) {
        let stored = burn_cubecl::kernel::into_contiguous(cube);
        return Tensor::from_primitive::<burn_cubecl::CubeBackend>(stored);
    }
    t
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn gpu_write<const D: usize>(target: &Tensor<D>, values: &[f32]) -> Result<()> {
    let refuse = |why: &str| {
        Err(HvqError::Device(format!(
            "cannot write into the device buffer of a tensor of shape {:?}: {why}",
            target.dims()
        )))
    };
    let Some(cube) = super::gpu_tensor::plain_f32(target.clone()) else {
        return refuse(
            "only plain f32 tensors of a GPU backend (not tracked by autodiff) are written in \
             place",
        );
    };
    // Row-major strides with no padding between rows: the bytes written are the values in order.
    if !cube.is_contiguous() {
        return refuse("its elements are not stored contiguously in row-major order");
    }
    let bytes = std::mem::size_of_val(values) as u64;
    if cube.handle.size_in_used() < bytes {
        return refuse("its buffer is smaller than its elements");
    }
    cube.client.write(
        &cube.handle,
        burn::tensor::Bytes::from_elems(values.to_vec()),
    );
    Ok(())
}

#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
fn gpu_write<const D: usize>(target: &Tensor<D>, _values: &[f32]) -> Result<()> {
    Err(HvqError::Device(format!(
        "cannot write into the device buffer of a tensor of shape {:?}: this build has no GPU \
         backend",
        target.dims()
    )))
}
