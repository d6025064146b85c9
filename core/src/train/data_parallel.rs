//! Data-parallel training: one replica of the network per device, each step's batch split
//! across them.
//!
//! A step with N replicas computes what one device computes with the whole batch:
//! - the batch (the epoch order's next `batch_size` samples) is cut into N contiguous shards
//!   (sizes differ by at most one, the first ones larger), shard r run by replica r;
//! - the EMA codebooks move over the whole batch in the single-device sample order
//!   ([`HvqModel::forward_train_sharded`]);
//! - every loss term is a mean over samples, so the batch's loss is Σ_r (n_r / n) · loss_r: each
//!   replica back-propagates its weighted loss and the gradients are summed, in replica order,
//!   on the first device;
//! - one optimiser (its state on the first device) steps the first replica, whose parameters
//!   and codebooks are then copied to the others ([`Replicas::broadcast`]).
//!
//! What differs from one device is only float rounding (per-shard products and sums), and
//! dropout: each device draws its own masks (deterministic for a seed and a device list).
//! burn 0.22's collectives (`burn::tensor::distributed::all_reduce`) run on CUDA only, through
//! NCCL (CPU: unimplemented; wgpu: no device transport), so the sums here go through burn's
//! device-to-device copies, which work between any devices, CPU and wgpu included.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use crate::error::{HvqError, Result};
use crate::model::HvqModel;
use crate::weights::TensorMap;

/// The replicas beyond the trainer's own model (which is replica 0).
pub struct Replicas {
    /// Autodiff device of each further replica.
    devices: Vec<Device>,
    /// Each further replica's network (`None` only while a step runs).
    models: Vec<Option<HvqModel>>,
}

impl Replicas {
    /// Copies of `primary` on each of `devices` (autodiff devices).
    pub fn new(primary: &HvqModel, devices: &[Device]) -> Self {
        Self {
            devices: devices.to_vec(),
            models: devices
                .iter()
                .map(|d| Some(primary.clone().fork(d)))
                .collect(),
        }
    }

    /// No further replicas: training on one device.
    pub fn none() -> Self {
        Self {
            devices: Vec::new(),
            models: Vec::new(),
        }
    }

    /// Further replicas (0 on one device).
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether there are no further replicas.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The device of further replica `i`.
    pub fn device(&self, i: usize) -> &Device {
        &self.devices[i]
    }

    /// Take the networks of the first `n` further replicas for a step.
    pub fn take(&mut self, n: usize) -> Vec<HvqModel> {
        self.models
            .iter_mut()
            .take(n)
            .map(|m| m.take().expect("a replica is only out during a step"))
            .collect()
    }

    /// After the optimiser step: every further replica continues from `primary`'s parameters
    /// and codebooks. `returned` are the networks [`take`](Self::take) lent out, back in their
    /// slots first. Only the codebook slots in `moved` (those the batch's classes use) are
    /// copied: the EMA moves no other codebook, so each replica's own copy of the rest still
    /// equals `primary`'s (checked by [`max_difference`](Self::max_difference)). With the
    /// official 15 classes that spares most of ~140 MB of codebooks per step.
    pub fn broadcast(
        &mut self,
        primary: &HvqModel,
        returned: Vec<HvqModel>,
        moved: &std::collections::BTreeSet<usize>,
    ) {
        for (slot, model) in self.models.iter_mut().zip(returned) {
            *slot = Some(model);
        }
        for (slot, device) in self.models.iter_mut().zip(&self.devices) {
            let mut copy = primary.clone();
            if let Some(own) = slot.take() {
                for (books, own_books) in copy.quantize_lists.iter_mut().zip(own.quantize_lists) {
                    for (index, (book, own_book)) in books.iter_mut().zip(own_books).enumerate() {
                        if !moved.contains(&index) {
                            *book = own_book;
                        }
                    }
                }
            }
            // Tensors already on `device` (the codebooks kept) stay where they are.
            *slot = Some(copy.fork(device));
        }
    }

    /// The largest absolute difference between any further replica's parameters (codebooks
    /// included) and `primary`'s: 0 when they are in step, as they must be after each step.
    pub fn max_difference(&self, primary: &HvqModel) -> Result<f32> {
        let reference = TensorMap::from_module(primary, "replica 0");
        let mut worst = 0.0f32;
        for (i, model) in self.models.iter().enumerate() {
            let model = model.as_ref().ok_or_else(|| {
                HvqError::Training(format!("replica {} is out of its slot", i + 1))
            })?;
            let copy = TensorMap::from_module(model, "replica");
            for name in reference.names() {
                let (a, b) = (reference.get(name), copy.get(name));
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(HvqError::Training(format!(
                        "replica {} lacks parameter {name}",
                        i + 1
                    )));
                };
                if a.shape != b.shape {
                    return Err(HvqError::Training(format!(
                        "replica {}: {name} is {:?}, replica 0's is {:?}",
                        i + 1,
                        b.shape,
                        a.shape
                    )));
                }
                for (x, y) in a.data.iter().zip(&b.data) {
                    // NaN on either side counts as a difference.
                    let d = (x - y).abs();
                    worst = if d.is_nan() { f32::NAN } else { worst.max(d) };
                }
            }
        }
        Ok(worst)
    }
}

/// Add `more` (gradients by parameter path, on any device) into `sum`, on `device`. A
/// parameter only one side has is taken as it is (a class's expert gets gradients only from the
/// shards that hold the class).
pub fn accumulate(
    sum: &mut BTreeMap<String, Tensor<1>>,
    more: BTreeMap<String, Tensor<1>>,
    device: &Device,
) {
    for (name, g) in more {
        let g = g.to_device(device);
        match sum.remove(&name) {
            Some(s) => sum.insert(name, s + g),
            None => sum.insert(name, g),
        };
    }
}
