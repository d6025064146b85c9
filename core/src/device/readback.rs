//! Reading device tensors back to the host, with a device error instead of a backend panic.

use burn::tensor::Tensor;

use crate::error::{HvqError, Result};

/// Read a device tensor back to the host as f32 values (row-major), with a device error rather
/// than a panic when the backend fails.
pub fn read_back<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    // The async read-back run to completion, as burn's own `into_data` does.
    burn::tensor::try_read_sync(read_back_async(tensor)).unwrap_or_else(|| {
        Err(HvqError::Device(
            "this backend cannot read results synchronously here: use read_back_async".into(),
        ))
    })
}

/// [`read_back`] for backends that cannot block (WebGPU in the browser); the same values.
pub async fn read_back_async<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .into_data_async()
        .await
        .map_err(|e| HvqError::Device(format!("reading results back: {e:?}")))?
        .try_into_vec_as::<f32>()
        .map_err(|e| HvqError::Device(format!("reading results back: {e:?}")))
}
