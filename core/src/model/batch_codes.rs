//! The codebooks one level of a batch is compared with.
//!
//! Each sample uses its class's codebook. A batch of one class (and every batch of a one-class
//! model) uses a single codebook: the batch then reads that codebook in place (a broadcast view)
//! and transposes it once for the code lookup, instead of copying it once per sample into a stack
//! and transposing the stack. The arithmetic is the per-sample path's, operation for operation,
//! so an image gets bit for bit the same result alone, in a batch of its class or in a mixed one.

use burn::tensor::{Int, Tensor};

use super::quantizer::Codebook;

/// The codebooks a batch uses, in both layouts: G = 1 when every sample shares one, else G = B
/// (sample b's at b).
#[derive(Clone, Debug)]
pub struct BatchCodes {
    /// Codes as columns (the stored layout), `[G, D, K]`: the right-hand side of the distance
    /// products.
    columns: Tensor<3>,
    /// Codes as rows, contiguous `[G, K, D]`: the chosen codes are whole rows of it.
    rows: Tensor<3>,
}

impl BatchCodes {
    /// The codebooks `books[slots[b]]` of a batch's samples: the shared codebook in place plus
    /// one transposed copy, or a copy of each sample's in both layouts.
    pub fn for_slots(books: &[Codebook], slots: &[usize]) -> Self {
        let used = if slots.windows(2).all(|w| w[0] == w[1]) {
            &slots[..1]
        } else {
            slots
        };
        let mut embeds: Vec<Tensor<2>> = used.iter().map(|&s| books[s].embed.val()).collect();
        // One codebook is read in place (a view; stacking one tensor copies it).
        let columns = if embeds.len() == 1 {
            embeds.pop().expect("one codebook").unsqueeze::<3>()
        } else {
            Tensor::stack::<3>(embeds, 0)
        };
        Self::from_columns(columns.detach())
    }

    /// The codebooks given as `[G, D, K]` (codes as columns, the stored layout): one per sample,
    /// or one (G = 1) for every sample.
    pub fn from_columns(columns: Tensor<3>) -> Self {
        let [g, d, k] = columns.dims();
        // Merging the transposed view's axes copies it into rows on every backend.
        let rows = columns
            .clone()
            .swap_dims(1, 2)
            .reshape([g * k, d])
            .reshape([g, k, d]);
        Self { columns, rows }
    }

    /// Whether one codebook serves every sample.
    fn shared(&self) -> bool {
        self.columns.dims()[0] == 1
    }

    /// Number of codes K.
    pub fn codes(&self) -> usize {
        self.rows.dims()[1]
    }

    /// The codes as rows of one matrix, `[G·K, D]`: sample b's code j is row `b·K + j` (one
    /// codebook per sample) or row j (shared).
    pub fn code_rows(&self) -> Tensor<2> {
        let [g, k, d] = self.rows.dims();
        self.rows.clone().reshape([g * k, d])
    }

    /// Row of `code_rows` holding code j of sample b, as an offset added to j: `[B, 1]`.
    pub fn row_offsets(&self, batch: usize) -> Tensor<2, Int> {
        let step = if self.shared() {
            0
        } else {
            self.codes() as i64
        };
        Tensor::<1, Int>::arange(0..batch as i64, &self.rows.device())
            .mul_scalar(step)
            .reshape([batch, 1])
    }

    /// Dot products of every token of `x [B, L, D]` with its sample's codes, `[B, L, K]`.
    pub fn dots(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, _, _] = x.dims();
        crate::kernels::products::matmul(x, self.per_sample_columns(b))
    }

    /// Squared norms of the codes, summed over the rows, `[G, 1, K]`.
    pub fn squared_norms(&self) -> Tensor<3> {
        let [g, k, _] = self.rows.dims();
        self.rows
            .clone()
            .powi_scalar(2)
            .sum_dim(2)
            .reshape([g, 1, k])
    }

    /// Euclidean norms of the codes, summed over the columns (as the OT score always did),
    /// `[G, 1, K]`.
    pub fn norms(&self) -> Tensor<3> {
        self.columns.clone().powi_scalar(2).sum_dim(1).sqrt()
    }

    /// Each sample's codebook as `[B, D, K]` (codes as columns; a broadcast view when shared).
    pub fn per_sample_columns(&self, batch: usize) -> Tensor<3> {
        if self.shared() {
            let [_, d, k] = self.columns.dims();
            self.columns.clone().expand([batch, d, k])
        } else {
            self.columns.clone()
        }
    }

    /// Moved to `device`.
    pub fn to_device(&self, device: &burn::tensor::Device) -> Self {
        Self {
            columns: self.columns.clone().to_device(device),
            rows: self.rows.clone().to_device(device),
        }
    }

    /// Samples `start .. start + len` (a shared codebook serves any of them as it is).
    pub fn narrow(&self, start: usize, len: usize) -> Self {
        if self.shared() {
            return self.clone();
        }
        Self {
            columns: self.columns.clone().narrow(0, start, len),
            rows: self.rows.clone().narrow(0, start, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ot_score, quantize};
    use burn::tensor::{Device, Distribution};

    /// A batch of one class goes through the shared path (the codebook read in place, one
    /// transposed copy); the same codebook given once per sample goes through the per-sample one.
    /// An image must get bit for bit the same result either way (`hvq predict --batch` promises
    /// each image its result alone), on the CPU and on wgpu.
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
            // Sizes past gemm's smallest kernels, with ragged tails.
            let (b, l, d, k) = (3, 19, 40, 33);
            let books: Vec<Codebook> = (0..2).map(|_| Codebook::new(d, k, &device)).collect();
            let x = Tensor::<3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
            let shared = BatchCodes::for_slots(&books, &[1, 1, 1]);
            let copies =
                BatchCodes::from_columns(Tensor::stack::<3>(vec![books[1].embed.val(); b], 0));
            assert!(shared.shared() && !copies.shared());
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
            assert_eq!(read(one.quantized), read(many.quantized), "{device:?}");
            assert_eq!(read(one.prototypes), read(many.prototypes), "{device:?}");
            let diff = |t: Tensor<1>| crate::device::read_back(t).unwrap();
            assert_eq!(diff(one.diff), diff(many.diff), "{device:?}");
            let ot = |codes: &BatchCodes| {
                crate::device::read_back(ot_score(x.clone(), codes, k as f32)).unwrap()
            };
            assert_eq!(ot(&shared), ot(&copies), "{device:?}");
            // The distances themselves, not only their arg-min.
            let dots = |codes: &BatchCodes| read(codes.dots(x.clone()));
            assert_eq!(dots(&shared), dots(&copies), "{device:?}");
            // A mixed batch keeps one codebook per sample, in the samples' order.
            let mixed = BatchCodes::for_slots(&books, &[1, 0, 1]);
            assert!(!mixed.shared());
            let columns = read(mixed.per_sample_columns(b));
            let want: Vec<f32> = [1, 0, 1]
                .iter()
                .flat_map(|&s| read(books[s].embed.val().unsqueeze::<3>()))
                .collect();
            assert_eq!(columns, want, "{device:?}");
        }
    }
}
