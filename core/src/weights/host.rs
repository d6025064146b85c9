//! A tensor in host memory, the unit every weights format reads into and writes from.

use burn::tensor::{Device, Tensor, TensorData};

/// A tensor held in host memory as f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Build from shape and data; the length must match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Copy a device tensor to the host.
    pub fn from_tensor<const D: usize>(tensor: &Tensor<D>) -> Self {
        let data = tensor.to_data();
        Self {
            shape: data.shape().to_vec(),
            data: data
                .try_into_vec_as::<f32>()
                .expect("float tensors convert to f32"),
        }
    }

    /// Upload to a device as a rank-`D` tensor (the rank must match).
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(self.shape.len(), D, "rank mismatch uploading a host tensor");
        Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        )
    }
}
