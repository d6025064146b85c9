//! The class an image is scored under when it is left to the model, chosen on the device.
//!
//! The model picks a class for an image in one of two ways: its classifier's prediction (the
//! largest logit), or, without a classifier, every class scored and the lowest score kept (the
//! best reconstruction). Both used to be decided on the host: the logits or the scores were read
//! back, and the rest of the pass queued after the read. On a GPU that read is a wait in the
//! middle of the pass (the device idles while the host queues the remaining launches), and it
//! keeps the pass from being recorded and replayed ([`crate::replay`]), so a folder inspected
//! under `auto` never replayed. Here the choice is made with device operations on the logits or
//! the scores, the chosen index tensor selects the class's codebooks and expert on the device
//! ([`crate::model::Classes::OnDevice`]), and the classes are read back with the scores, once.
//!
//! The choice is defined so that a device computes it exactly and the host twins agree bit for
//! bit: NaN counts as the worst value (−∞ for a logit, +∞ for a score), the largest logit's
//! last index wins a tie, the lowest score's first. The index lists the operations use are
//! uploaded once and kept ([`crate::model::kept_ids`]): a recorded pass may upload nothing.

use burn::tensor::{Int, Tensor};

use crate::device::read_back_async;
use crate::error::{HvqError, Result};
use crate::kernels::RowChoice;
use crate::model::{Classes, kept_ids};

/// How the classes of a batch's images are given to a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchClasses {
    /// Each image under the class given for it.
    Given(Vec<usize>),
    /// Every image's class left to the model, chosen on the device: its classifier's
    /// prediction when it has one, else the class with the lowest score.
    ByModel,
}

/// A batch scored under classes resolved on the device (`Detector::score_resolved`), nothing
/// read back yet.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Anomaly maps at the model's input size under the chosen classes, `[B, 1, S, S]`.
    pub maps: Tensor<4>,
    /// Image scores under the chosen classes, `[B]`.
    pub scores: Tensor<1>,
    /// The chosen classes: listed when they were given, else on the device.
    pub classes: Classes,
}

impl Resolved {
    /// The classes and the image scores, read back together (one read; the maps stay on the
    /// device).
    pub async fn read(&self) -> Result<(Vec<usize>, Vec<f32>)> {
        let ids = match &self.classes {
            Classes::Listed(classes) => {
                return Ok((classes.clone(), read_back_async(self.scores.clone()).await?));
            }
            Classes::OnDevice(ids) => (**ids).clone(),
        };
        let b = ids.dims()[0];
        // Class indices are small integers: exact in f32.
        let both = Tensor::cat(vec![self.scores.clone(), ids.float()], 0);
        let values = read_back_async(both).await?;
        if values.len() != 2 * b {
            return Err(HvqError::Device(format!(
                "read {} values for {b} scores and classes",
                values.len()
            )));
        }
        let classes = values[b..].iter().map(|&c| c as usize).collect();
        Ok((classes, values[..b].to_vec()))
    }
}

/// Per row of `logits [B, N]`, the index of its largest value (the last on ties; NaN counts as
/// −∞), `[B]`, computed on the device: one kernel on a GPU backend, burn's operations elsewhere.
/// [`last_maximum_rows`] is its host twin.
pub fn last_maximum(logits: Tensor<2>) -> Tensor<1, Int> {
    crate::kernels::row_choice(&logits, RowChoice::LastMaximum)
        .unwrap_or_else(|| last_maximum_composed(logits))
}

/// [`last_maximum`] in burn's operations (any backend).
fn last_maximum_composed(logits: Tensor<2>) -> Tensor<1, Int> {
    let n = logits.dims()[1];
    let logits = logits.clone().mask_fill(logits.is_nan(), f32::NEG_INFINITY);
    // Each column weighted by its index + 1: the largest weight among the maxima is the last.
    let weights: Vec<usize> = (1..=n).collect();
    extreme_index(logits.clone(), logits.max_dim(1), &weights).sub_scalar(1)
}

/// Per row of `scores [B, N]`, the index of its lowest value (the first on ties; NaN counts as
/// +∞), `[B]`, computed on the device: one kernel on a GPU backend, burn's operations elsewhere.
/// [`first_minimum_rows`] is its host twin.
pub fn first_minimum(scores: Tensor<2>) -> Tensor<1, Int> {
    crate::kernels::row_choice(&scores, RowChoice::FirstMinimum)
        .unwrap_or_else(|| first_minimum_composed(scores))
}

/// [`first_minimum`] in burn's operations (any backend).
fn first_minimum_composed(scores: Tensor<2>) -> Tensor<1, Int> {
    let n = scores.dims()[1];
    let scores = scores.clone().mask_fill(scores.is_nan(), f32::INFINITY);
    // Each column weighted by N − its index: the largest weight among the minima is the first.
    let weights: Vec<usize> = (1..=n).rev().collect();
    extreme_index(scores.clone(), scores.min_dim(1), &weights)
        .neg()
        .add_scalar(n as i64)
}

/// The largest of `weights` (one per column) among the columns of `values [B, N]` equal to the
/// row's `extreme [B, 1]` (one of its values, so one column at least is), `[B]`.
fn extreme_index(values: Tensor<2>, extreme: Tensor<2>, weights: &[usize]) -> Tensor<1, Int> {
    let [b, n] = values.dims();
    let device = values.device();
    let at_extreme = values.equal(extreme.expand([b, n]));
    let weights = kept_ids(weights, &device).reshape([1, n]).expand([b, n]);
    (at_extreme.int() * weights).max_dim(1).reshape([b])
}

/// Host twin of [`last_maximum`] for row-major `values` with `n` columns.
pub fn last_maximum_rows(values: &[f32], n: usize) -> Vec<usize> {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    values
        .chunks(n.max(1))
        .map(|row| {
            let best = row
                .iter()
                .map(|&v| key(v))
                .fold(f32::NEG_INFINITY, f32::max);
            row.iter().rposition(|&v| key(v) == best).unwrap_or(0)
        })
        .collect()
}

/// Host twin of [`first_minimum`] for row-major `values` with `n` columns.
pub fn first_minimum_rows(values: &[f32], n: usize) -> Vec<usize> {
    let key = |v: f32| if v.is_nan() { f32::INFINITY } else { v };
    values
        .chunks(n.max(1))
        .map(|row| {
            let best = row.iter().map(|&v| key(v)).fold(f32::INFINITY, f32::min);
            row.iter().position(|&v| key(v) == best).unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// Rows where the rules decide: ties, NaN, ±∞, a row of NaN only, −0 against +0.
    fn rows() -> (Vec<f32>, usize) {
        let (nan, inf) = (f32::NAN, f32::INFINITY);
        let rows: [[f32; 4]; 9] = [
            [0.5, 2.0, -1.0, 2.0],
            [3.0, 3.0, 1.0, 0.0],
            [nan, 1.0, 1.0, nan],
            [nan, nan, nan, nan],
            [-inf, -inf, -inf, -inf],
            [inf, 4.0, inf, -inf],
            [-0.0, 0.0, -0.0, -1.0],
            [1.0, -2.0, 7.5, -2.0],
            [-3.0, nan, -3.0, 9.0],
        ];
        (rows.iter().flatten().copied().collect(), 4)
    }

    /// Each device choice is its host twin's, row for row, on the CPU and on wgpu; the twins
    /// follow the stated rules (checked here by the rows' expected indices, worked out by
    /// hand: a tie rule the other way round, or NaN left in, fails them).
    #[test]
    fn the_device_choices_are_their_host_twins() {
        let (values, n) = rows();
        let maxima = last_maximum_rows(&values, n);
        assert_eq!(maxima, vec![3, 1, 2, 3, 3, 2, 2, 2, 3]);
        let minima = first_minimum_rows(&values, n);
        assert_eq!(minima, vec![2, 3, 1, 0, 0, 3, 3, 1, 0]);
        choices_on(Device::flex(), &values, n, &maxima, &minima);
        #[cfg(feature = "wgpu")]
        choices_on(
            crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap(),
            &values,
            n,
            &maxima,
            &minima,
        );
    }

    /// On `device`, the choices (one kernel launch each on a GPU backend) and their composed
    /// forms against the host twins' indices, on the rows as they are and on their transposed
    /// view's transpose (columns not adjacent: strides read).
    fn choices_on(device: Device, values: &[f32], n: usize, maxima: &[usize], minima: &[usize]) {
        let b = values.len() / n;
        let tensor = || Tensor::<2>::from_data(TensorData::new(values.to_vec(), [b, n]), &device);
        let strided = || {
            let t: Vec<f32> = (0..n * b).map(|i| values[(i % b) * n + i / b]).collect();
            Tensor::<2>::from_data(TensorData::new(t, [n, b]), &device).transpose()
        };
        let read = |t: Tensor<1, Int>| -> Vec<usize> {
            let v = crate::device::read_back(t.float()).unwrap();
            v.iter().map(|&x| x as usize).collect()
        };
        for (name, values) in [("rows", tensor()), ("strided", strided())] {
            assert_eq!(
                read(last_maximum(values.clone())),
                maxima,
                "{device:?} {name}"
            );
            assert_eq!(
                read(first_minimum(values.clone())),
                minima,
                "{device:?} {name}"
            );
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            if crate::device::adapter_info(&device).is_some() {
                let launches = |choose: fn(Tensor<2>) -> Tensor<1, Int>| {
                    let profiler = crate::device::kernel_profile::KernelProfiler::start("choice");
                    let chosen = choose(values.clone());
                    let launches = profiler.finish().stages[0].launches;
                    drop(chosen);
                    launches
                };
                assert_eq!(launches(last_maximum), 1, "{device:?} {name}");
                assert_eq!(launches(first_minimum), 1, "{device:?} {name}");
            }
            assert_eq!(read(last_maximum_composed(values.clone())), maxima);
            assert_eq!(read(first_minimum_composed(values)), minima);
        }
    }
}
