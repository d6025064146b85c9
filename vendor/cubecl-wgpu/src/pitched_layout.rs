//! hvq patch (vendor/README.md): CUDA's pitched allocations on wgpu, a stand-in for tests.
//!
//! CUDA's runtime allocates a tensor with each row aligned (cubecl's
//! `PitchedMemoryLayoutPolicy` at 512 bytes: a `[.., 14]` f32 tensor's rows 16 values apart),
//! while wgpu's allocates every tensor contiguously, so a kernel that mishandles padded rows is
//! right on wgpu and wrong on an NVIDIA GPU. With `HVQ_WGPU_LAYOUT=pitched` in the environment,
//! wgpu allocates as CUDA does and its reads and writes take such tensors (rows copied around
//! the padding on the host), so the same mistake fails on any wgpu adapter. Unset, or any other
//! value: the contiguous layout, reads and writes as upstream.

use cubecl_core::zspace::{Shape, Strides};
use cubecl_server::allocator::Pitch;
use std::sync::OnceLock;

/// The row alignment CUDA's runtime gives its pitched allocations (cubecl-cuda's `runtime.rs`).
pub(crate) const CUDA_ROW_ALIGNMENT: usize = 512;

/// Whether this process allocates as CUDA does (`HVQ_WGPU_LAYOUT=pitched`, read once).
pub fn pitched_layout() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("HVQ_WGPU_LAYOUT").is_ok_and(|v| v.trim().eq_ignore_ascii_case("pitched"))
    })
}

/// Whether `strides` lay `shape` out row-major with padded rows, as the pitched layout does
/// (not merely contiguous).
pub(crate) fn is_pitched(shape: &Shape, strides: &Strides) -> bool {
    pitched_layout()
        && !shape.is_empty()
        && cubecl_core::zspace::striding::has_pitched_row_major_strides(shape, strides)
}

/// The rows of a pitched tensor, `None` for one without padding.
pub(crate) fn pitch(shape: &Shape, strides: &Strides, elem_size: usize) -> Option<Pitch> {
    if !is_pitched(shape, strides) {
        return None;
    }
    Pitch::of(shape, strides, elem_size)
}

/// The bytes from a pitched tensor's first row to the end of its last, its padding between
/// rows included: what its buffer holds at least (a view of a wider tensor, a slice of its
/// columns, has no padding after its last row).
pub(crate) fn spanned_bytes(pitch: Pitch) -> usize {
    match pitch.height {
        0 => 0,
        h => (h - 1) * pitch.stride_bytes + pitch.width_bytes,
    }
}

/// `values` (the rows in order, unpadded) laid out with `pitch`'s padding (zeros). The write
/// covers the padding too, which a fresh allocation (all burn writes into) does not mind, where
/// CUDA's two-dimensional copy would leave it as it was.
pub(crate) fn padded(values: &[u8], pitch: Pitch) -> Vec<u8> {
    let mut out = vec![0u8; spanned_bytes(pitch)];
    for (row, chunk) in values.chunks(pitch.width_bytes).enumerate().take(pitch.height) {
        let at = row * pitch.stride_bytes;
        out[at..at + chunk.len()].copy_from_slice(chunk);
    }
    out
}

/// The rows of a pitched buffer `stored`, without the padding.
pub(crate) fn unpadded(stored: &[u8], pitch: Pitch) -> Vec<u8> {
    let mut out = Vec::with_capacity(pitch.height * pitch.width_bytes);
    for row in 0..pitch.height {
        let at = row * pitch.stride_bytes;
        out.extend_from_slice(&stored[at..at + pitch.width_bytes]);
    }
    out
}
