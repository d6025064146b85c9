//! The codebooks one level of a batch is compared with, codes as rows.
//!
//! Each sample uses its class's codebook. A batch of one class (and every batch of a one-class
//! model) uses a single codebook: it is then compared with the whole batch in one product
//! `[B·L, D] × [D, K]`, instead of being copied once per sample and multiplied sample by sample.

use burn::tensor::Tensor;

use super::quantizer::Codebook;

/// The codebooks a batch uses: one shared by every sample, or one per sample.
#[derive(Clone, Debug)]
pub struct BatchCodes {
    /// Codes as rows, contiguous `[G, K, D]`: G = 1 when shared, else G = B (sample b's at b).
    rows: Tensor<3>,
    /// Per sample only: the codebooks in their stored layout (codes as columns), contiguous
    /// `[B, D, K]`, the right-hand side of the per-sample products.
    columns: Option<Tensor<3>>,
}

impl BatchCodes {
    /// The codebooks `books[slots[b]]` of a batch's samples: one transposing copy of the shared
    /// codebook, or (different codebooks) a copy of each sample's in both layouts.
    pub fn for_slots(books: &[Codebook], slots: &[usize]) -> Self {
        if slots.windows(2).all(|w| w[0] == w[1]) {
            let embed = books[slots[0]].embed.val().detach(); // (D, K)
            let [d, k] = embed.dims();
            // Through a reshape: a transposed view is copied into rows on every backend.
            let rows = embed.transpose().reshape([k * d]).reshape([1, k, d]);
            Self {
                rows,
                columns: None,
            }
        } else {
            let used: Vec<Tensor<2>> = slots.iter().map(|&s| books[s].embed.val()).collect();
            Self::per_sample(Tensor::stack::<3>(used, 0).detach())
        }
    }

    /// One codebook per sample, given as `[B, D, K]` (codes as columns, the stored layout).
    pub fn per_sample(embeds: Tensor<3>) -> Self {
        let [b, d, k] = embeds.dims();
        // Merging the transposed view's axes copies it into rows on every backend.
        let rows = embeds
            .clone()
            .swap_dims(1, 2)
            .reshape([b * k, d])
            .reshape([b, k, d]);
        Self {
            rows,
            columns: Some(embeds),
        }
    }

    /// Number of codes K.
    pub fn codes(&self) -> usize {
        self.rows.dims()[1]
    }

    /// The codes as rows of one matrix, `[G·K, D]`: sample b's code j is row `b·K + j` (per
    /// sample) or row j (shared).
    pub fn code_rows(&self) -> Tensor<2> {
        let [g, k, d] = self.rows.dims();
        self.rows.clone().reshape([g * k, d])
    }

    /// Row of `code_rows` holding code j of sample b, as an offset added to j: `[B, 1]`.
    pub fn row_offsets(&self, batch: usize) -> Tensor<2, burn::tensor::Int> {
        let step = match self.columns {
            Some(_) => self.codes() as i64,
            None => 0,
        };
        Tensor::<1, burn::tensor::Int>::arange(0..batch as i64, &self.rows.device())
            .mul_scalar(step)
            .reshape([batch, 1])
    }

    /// Dot products of every token of `x [B, L, D]` with its sample's codes, `[B, L, K]`.
    pub fn dots(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.columns {
            Some(columns) => x.matmul(columns.clone()),
            None => {
                let [b, l, d] = x.dims();
                let k = self.codes();
                let codes = self.rows.clone().reshape([k, d]).transpose();
                x.reshape([b * l, d]).matmul(codes).reshape([b, l, k])
            }
        }
    }

    /// Squared norms of the codes, `[G, 1, K]` (broadcast over the batch when shared).
    pub fn squared_norms(&self) -> Tensor<3> {
        let [g, k, _] = self.rows.dims();
        self.rows
            .clone()
            .powi_scalar(2)
            .sum_dim(2)
            .reshape([g, 1, k])
    }

    /// Euclidean norms of the codes, `[G, 1, K]`, summed in the per-sample codebooks' stored
    /// layout (codes as columns, as the OT score always did) or over the shared one's rows.
    pub fn norms(&self) -> Tensor<3> {
        match &self.columns {
            Some(columns) => columns.clone().powi_scalar(2).sum_dim(1).sqrt(),
            None => self.squared_norms().sqrt(),
        }
    }

    /// Each sample's codebook as `[B, D, K]` (codes as columns; a broadcast view when shared).
    pub fn per_sample_columns(&self, batch: usize) -> Tensor<3> {
        match &self.columns {
            Some(columns) => columns.clone(),
            None => {
                let [_, k, d] = self.rows.dims();
                self.rows.clone().swap_dims(1, 2).expand([batch, d, k])
            }
        }
    }

    /// Moved to `device`.
    pub fn to_device(&self, device: &burn::tensor::Device) -> Self {
        Self {
            rows: self.rows.clone().to_device(device),
            columns: self.columns.clone().map(|c| c.to_device(device)),
        }
    }

    /// Samples `start .. start + len` (a shared codebook serves any of them as it is).
    pub fn narrow(&self, start: usize, len: usize) -> Self {
        match &self.columns {
            None => self.clone(),
            Some(columns) => Self {
                rows: self.rows.clone().narrow(0, start, len),
                columns: Some(columns.clone().narrow(0, start, len)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ot_score, quantize};
    use burn::tensor::{Device, Distribution};

    /// A batch of one class goes through the shared path (one product against the codebook
    /// itself); the same codebook given once per sample goes through the batched one. Both must
    /// pick the same codes and give the same outputs, on the CPU and on wgpu.
    #[test]
    fn a_shared_codebook_quantises_as_one_copy_per_sample() {
        let _generator = crate::test_rng::lock();
        shared_equals_copies_on(Device::flex());
        #[cfg(feature = "wgpu")]
        shared_equals_copies_on(
            crate::device::create(crate::device::DeviceChoice::Wgpu).expect("wgpu device"),
        );
    }

    fn shared_equals_copies_on(device: Device) {
        {
            device.seed(11);
            let (b, l, d, k) = (3, 7, 5, 9);
            let books: Vec<Codebook> = (0..2).map(|_| Codebook::new(d, k, &device)).collect();
            let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let shared = BatchCodes::for_slots(&books, &[1, 1, 1]);
            let copies =
                BatchCodes::per_sample(Tensor::stack::<3>(vec![books[1].embed.val(); b], 0));
            assert!(shared.columns.is_none() && copies.columns.is_some());
            let (one, many) = (
                quantize(x.clone(), shared.clone()),
                quantize(x.clone(), copies.clone()),
            );
            let ints = |t: Tensor<2, burn::tensor::Int>| {
                t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap()
            };
            assert_eq!(ints(one.indices), ints(many.indices), "{device:?}");
            let read = |t: Tensor<3>| crate::device::read_back(t).unwrap();
            assert_eq!(read(one.codes), read(many.codes), "{device:?}");
            assert_eq!(read(one.prototypes), read(many.prototypes), "{device:?}");
            let ot = |codes: &BatchCodes| {
                crate::device::read_back(ot_score(x.clone(), codes, k as f32)).unwrap()
            };
            for (s, m) in ot(&shared).iter().zip(ot(&copies)) {
                assert!(
                    (s - m).abs() <= 1e-6 * m.abs().max(1.0),
                    "{device:?}: {s} vs {m}"
                );
            }
            // A mixed batch keeps one codebook per sample, in the samples' order.
            let mixed = BatchCodes::for_slots(&books, &[1, 0, 1]);
            assert!(mixed.columns.is_some());
            let columns = read(mixed.per_sample_columns(b));
            let want: Vec<f32> = [1, 0, 1]
                .iter()
                .flat_map(|&s| read(books[s].embed.val().unsqueeze::<3>()))
                .collect();
            assert_eq!(columns, want, "{device:?}");
        }
    }
}
