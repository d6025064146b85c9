//! The codebooks one level of a batch is compared with.
//!
//! Each sample uses its class's codebook. A batch of one class (and every batch of a one-class
//! model) uses a single codebook: the batch then reads that codebook in place (a broadcast view),
//! with its codes as rows and their squared norms computed once and kept by the codebook until
//! its codes change, instead of copying it once per sample into a stack and transposing the
//! stack at every batch. A batch that mixes classes selects its samples' codebooks from the
//! level's codebooks stacked once, with their rows and norms (kept by the level's first codebook
//! until a code of the level moves): three launches instead of a copy per sample and the copies'
//! rows and norms. The arithmetic is the per-sample path's, operation for operation, so an image
//! gets bit for bit the same result alone, in a batch of its class or in a mixed one.

use burn::tensor::{Int, Tensor};

use super::quantizer::Codebook;
use super::slot_ids::Slots;

/// The codebooks a batch uses, in both layouts: G = 1 when every sample shares one, else G = B
/// (sample b's at b).
#[derive(Clone, Debug)]
pub struct BatchCodes {
    /// Codes as columns (the stored layout), `[G, D, K]`: the right-hand side of the distance
    /// products.
    columns: Tensor<3>,
    /// Codes as rows, contiguous `[G, K, D]`: the chosen codes are whole rows of it.
    rows: Tensor<3>,
    /// Squared norms of the codes, summed over the rows, `[G, 1, K]`.
    squared_norms: Tensor<3>,
    /// Euclidean norms of the codes, summed over the columns, `[G, 1, K]`, when kept with a
    /// shared codebook (the OT score's; computed when asked otherwise).
    norms: Option<Tensor<3>>,
}

impl BatchCodes {
    /// The codebooks `books[slots[b]]` of a batch's samples (`books`: a level's, every one): the
    /// shared codebook in place plus one transposed copy, or each sample's selected from the
    /// level's codebooks stacked in both layouts.
    pub fn for_slots(books: &[Codebook], slots: &[usize]) -> Self {
        if slots.windows(2).all(|w| w[0] == w[1])
            && let Some(&slot) = slots.first()
        {
            // One codebook, read in place (a view; stacking one tensor copies it). Its rows and
            // norms depend on the codebook alone: computed at the first batch and kept by the
            // codebook until its codes change.
            let book = &books[slot];
            let columns = book.embed.val().unsqueeze::<3>().detach();
            let (rows, squared_norms, norms) = book.rows_and_norms.get_or_compute(|| {
                let (rows, squared_norms) = Self::rows_and_norms(&columns);
                (rows, squared_norms, Self::norms_of(&columns))
            });
            return Self {
                columns,
                rows,
                squared_norms,
                norms: Some(norms),
            };
        }
        // Codebooks differ between samples: each sample's is selected from the level's codebooks
        // stacked once (kept by the level's first codebook until a code moves), three launches
        // for the batch instead of a copy per sample and the rows and norms of the copies.
        let level = Self::level(books);
        let ids = super::slot_ids::slot_ids(slots, &level.rows.device());
        level.selected(ids)
    }

    /// The codebooks of a batch whose slots are listed, or chosen on the device (selected from
    /// the level's stack by the index tensor, as a batch mixing listed slots is: the same
    /// values, bit for bit, whichever slots the device chose).
    pub fn for_batch(books: &[Codebook], slots: &Slots) -> Self {
        match slots {
            Slots::Listed(slots) => Self::for_slots(books, slots),
            Slots::OnDevice(ids) => Self::level(books).selected((**ids).clone()),
        }
    }

    /// Every codebook of a level stacked, `G` = the level's codebooks (kept by its first
    /// codebook until a code of the level moves).
    fn level(books: &[Codebook]) -> Self {
        books[0].level_stack.get_or_compute(|| {
            let embeds: Vec<Tensor<2>> = books.iter().map(|b| b.embed.val()).collect();
            Self::from_columns(Tensor::stack::<3>(embeds, 0).detach())
        })
    }

    /// The stacked codebooks `ids [B]` (one per sample).
    fn selected(&self, ids: Tensor<1, Int>) -> Self {
        Self {
            columns: self.columns.clone().select(0, ids.clone()),
            rows: self.rows.clone().select(0, ids.clone()),
            squared_norms: self.squared_norms.clone().select(0, ids),
            norms: None,
        }
    }

    /// The codebooks given as `[G, D, K]` (codes as columns, the stored layout): one per sample,
    /// or one (G = 1) for every sample.
    pub fn from_columns(columns: Tensor<3>) -> Self {
        let (rows, squared_norms) = Self::rows_and_norms(&columns);
        Self {
            columns,
            rows,
            squared_norms,
            norms: None,
        }
    }

    /// The codes of `columns [G, D, K]` as rows `[G, K, D]` and their squared norms `[G, 1, K]`.
    fn rows_and_norms(columns: &Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let [g, d, k] = columns.dims();
        // Merging the transposed view's axes copies it into rows on every backend.
        let rows = columns
            .clone()
            .swap_dims(1, 2)
            .reshape([g * k, d])
            .reshape([g, k, d]);
        let squared_norms = rows.clone().powi_scalar(2).sum_dim(2).reshape([g, 1, k]);
        (rows, squared_norms)
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
        self.squared_norms.clone()
    }

    /// Euclidean norms of the codes, summed over the columns (as the OT score always did),
    /// `[G, 1, K]`.
    pub fn norms(&self) -> Tensor<3> {
        self.norms
            .clone()
            .unwrap_or_else(|| Self::norms_of(&self.columns))
    }

    /// [`BatchCodes::norms`] of `columns [G, D, K]`.
    fn norms_of(columns: &Tensor<3>) -> Tensor<3> {
        columns.clone().powi_scalar(2).sum_dim(1).sqrt()
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
            squared_norms: self.squared_norms.clone().to_device(device),
            norms: self.norms.clone().map(|n| n.to_device(device)),
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
            squared_norms: self.squared_norms.clone().narrow(0, start, len),
            norms: self.norms.clone().map(|n| n.narrow(0, start, len)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ot_score, quantize};
    use burn::tensor::{Device, Distribution};

    /// The shared path keeps the codebook's rows and squared norms between batches (no launch
    /// for them on wgpu), and an EMA update, which moves the codes, drops them: the next batch
    /// gets the new codes' rows and norms (as a fresh computation gives them), not the old.
    #[test]
    fn kept_rows_and_norms_follow_the_codes() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(3);
        let (b, l, d, k) = (2, 7, 5, 9);
        let mut books = vec![Codebook::new(d, k, &device)];
        let read = |t: Tensor<3>| crate::device::read_back(t).unwrap();
        let fresh = |books: &[Codebook]| BatchCodes::from_columns(books[0].embed.val().unsqueeze());
        assert!(!books[0].rows_and_norms.is_filled());
        let first = BatchCodes::for_slots(&books, &[0, 0]);
        assert!(books[0].rows_and_norms.is_filled());
        assert_eq!(
            read(first.squared_norms()),
            read(fresh(&books).squared_norms())
        );
        assert_eq!(read(first.rows.clone()), read(fresh(&books).rows));

        let x = Tensor::<3>::random([b, l, d], Distribution::Normal(3.0, 1.0), &device);
        let out = quantize(x.clone(), first.clone());
        let one = |t: Tensor<3>| t.narrow(0, 0, 1);
        super::super::quantizer::ema_update(
            &mut books,
            &[0],
            one(x),
            out.indices.narrow(0, 0, 1),
            0.5,
            1e-5,
            None,
        );
        assert!(!books[0].rows_and_norms.is_filled());
        let after = BatchCodes::for_slots(&books, &[0, 0]);
        assert_ne!(read(after.squared_norms()), read(first.squared_norms()));
        assert_eq!(
            read(after.squared_norms()),
            read(fresh(&books).squared_norms())
        );
        assert_eq!(read(after.rows), read(fresh(&books).rows));
    }

    /// On wgpu a batch after the first launches nothing for the shared codebook's rows and norms
    /// (the distance product only, then the nearest-code kernel and the commitment's mean).
    #[cfg(feature = "wgpu")]
    #[test]
    fn a_kept_codebook_costs_no_launch() {
        let _generator = crate::test_rng::lock();
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let books = vec![Codebook::new(16, 24, &device)];
        let x = Tensor::<3>::random([1, 10, 16], Distribution::Normal(0.0, 1.0), &device);
        let run = || quantize(x.clone(), BatchCodes::for_slots(&books, &[0])).quantized;
        let read = |t: Tensor<3>| crate::device::read_back(t).unwrap();
        let first = read(run());
        let profiler = crate::device::kernel_profile::KernelProfiler::start("vq");
        let again = run();
        let profile = profiler.finish();
        assert_eq!(read(again), first);
        let names = profile.stages[0].names();
        assert!(
            !names
                .iter()
                .any(|n| n.contains("Copy") || n.contains("Mul")),
            "{names:?}"
        );
    }

    /// A batch that mixes codebooks selects each sample's from the level's codebooks stacked
    /// once: bit for bit the per-sample copies (columns, rows, squared norms), on the CPU and on
    /// wgpu; the stack is kept between batches (on wgpu a later batch launches no copy or
    /// slice assignment for it) and follows an EMA step that moves a codebook other than the
    /// first (the one that keeps the stack).
    #[test]
    fn a_mixed_batch_selects_from_the_levels_kept_stack() {
        let _generator = crate::test_rng::lock();
        selects_from_the_stack_on(Device::flex(), false);
        #[cfg(feature = "wgpu")]
        selects_from_the_stack_on(
            crate::device::create(crate::device::DeviceChoice::Wgpu).expect("wgpu device"),
            true,
        );
    }

    fn selects_from_the_stack_on(device: Device, count_launches: bool) {
        device.seed(5);
        let (l, d, k) = (11, 12, 17);
        let slots = [2, 0, 2, 1];
        let mut books: Vec<Codebook> = (0..3).map(|_| Codebook::new(d, k, &device)).collect();
        let read = |t: Tensor<3>| crate::device::read_back(t).unwrap();
        let copies = |books: &[Codebook]| {
            let embeds = slots.iter().map(|&s| books[s].embed.val()).collect();
            BatchCodes::from_columns(Tensor::stack::<3>(embeds, 0))
        };
        let same = |got: &BatchCodes, want: &BatchCodes| {
            assert_eq!(
                read(got.columns.clone()),
                read(want.columns.clone()),
                "{device:?}"
            );
            assert_eq!(
                read(got.rows.clone()),
                read(want.rows.clone()),
                "{device:?}"
            );
            assert_eq!(
                read(got.squared_norms()),
                read(want.squared_norms()),
                "{device:?}"
            );
        };
        assert!(!books[0].level_stack.is_filled());
        let first = BatchCodes::for_slots(&books, &slots);
        assert!(books[0].level_stack.is_filled());
        same(&first, &copies(&books));
        if count_launches {
            #[cfg(feature = "wgpu")]
            {
                let profiler = crate::device::kernel_profile::KernelProfiler::start("vq");
                let again = BatchCodes::for_slots(&books, &slots);
                let _ = read(again.squared_norms());
                let profile = profiler.finish();
                let names = profile.stages[0].names();
                assert!(
                    !names
                        .iter()
                        .any(|n| n.contains("Copy") || n.contains("SliceAssign")),
                    "{names:?}"
                );
                assert_eq!(profile.stages[0].launches, 3, "{names:?}");
            }
        }
        // Codebook 2 moves (its samples' tokens): the kept stack is dropped with it.
        let x = Tensor::<3>::random([1, l, d], Distribution::Normal(2.0, 1.0), &device);
        let out = quantize(x.clone(), BatchCodes::for_slots(&books, &[2]));
        super::super::quantizer::ema_update(&mut books, &[2], x, out.indices, 0.5, 1e-5, None);
        assert!(!books[0].level_stack.is_filled());
        let after = BatchCodes::for_slots(&books, &slots);
        same(&after, &copies(&books));
        assert_ne!(read(after.rows), read(first.rows));
    }

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
            assert_eq!(
                diff(one.diff.per_sample()),
                diff(many.diff.per_sample()),
                "{device:?}"
            );
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
