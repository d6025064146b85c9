//! Tensors joined along the first axis without burn's copy of a lone part.
//!
//! burn's `cat` and `stack` copy their input even when there is one: a launch and a pass over
//! the tensor for nothing. The vector quantiser's training rounds join per-round and per-codebook
//! parts that are often single (a batch of one codebook, a shard quantised in one round), so
//! they join through these.

use burn::tensor::Tensor;
use burn::tensor::kind::Basic;

/// `parts` concatenated along the first axis; one part as it is.
pub(super) fn concat<const D: usize, K: Basic>(mut parts: Vec<Tensor<D, K>>) -> Tensor<D, K> {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Tensor::cat(parts, 0)
    }
}

/// `parts` stacked along a new first axis; one part as a view with that axis.
pub(super) fn stack<const D: usize, const E: usize>(mut parts: Vec<Tensor<D>>) -> Tensor<E> {
    if parts.len() == 1 {
        parts.pop().expect("one part").unsqueeze_dim(0)
    } else {
        Tensor::stack(parts, 0)
    }
}
