//! A batch's codebook or expert slots as a device index tensor, uploaded once per distinct batch.
//!
//! A batch mixing classes selects each sample's codebooks (five levels) and expert from stacks
//! with an index tensor of its slots. Uploading it at every forward is a host-to-device copy per
//! selection; and a pass recorded as a graph of launches ([`crate::replay`]) may not upload
//! anything while it is recorded, since a replay would not repeat the copy. So the index tensors
//! of the last few distinct batches are kept, per device: the slots of an inspection's batches
//! repeat (the same classes in the same order, or the same fixed class list in a benchmark).

use std::sync::Mutex;

use burn::tensor::{Device, Int, Tensor, TensorData};

/// Distinct (slots, device) pairs kept; the oldest is dropped beyond it. An index tensor is a
/// few bytes of device memory.
const KEPT: usize = 32;

type Kept = Vec<(Vec<usize>, Device, Tensor<1, Int>)>;

static KEPT_IDS: Mutex<Kept> = Mutex::new(Vec::new());

/// Each sample's codebook or expert slot: listed by the host, or an index tensor `[B]` the device
/// computed (the classes the classifier chose, [`crate::model::Classes::OnDevice`]), which the
/// host never reads: the stacks are then selected by it on the device.
#[derive(Clone, Debug)]
pub enum Slots {
    /// The slots, one per sample.
    Listed(Vec<usize>),
    /// The slots as a device index tensor `[B]`.
    OnDevice(Box<Tensor<1, Int>>),
}

/// `slots` (or any index list: `crate::class_choice` keeps its weights here) as a `[len]` index
/// tensor on `device`, the same tensor (the same device buffer) each
/// time the same slots are asked for on the same device while they are kept.
pub fn slot_ids(slots: &[usize], device: &Device) -> Tensor<1, Int> {
    // A poisoned lock only means another thread panicked while holding it; the list itself is
    // always whole (every change is one push or one remove).
    let mut kept = KEPT_IDS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, ids)) = kept
        .iter()
        .find(|(s, d, _)| s.as_slice() == slots && d == device)
    {
        return ids.clone();
    }
    let values: Vec<i64> = slots.iter().map(|&s| s as i64).collect();
    let ids = Tensor::<1, Int>::from_data(TensorData::new(values, [slots.len()]), device);
    if kept.len() == KEPT {
        kept.remove(0);
    }
    kept.push((slots.to_vec(), device.clone(), ids.clone()));
    ids
}

/// Every index tensor kept now (clones: the same device buffers). A recorded pass
/// ([`crate::replay`]) holds them for as long as it may replay: its launches read the buffers
/// of the index tensors the pass asked for, which a later list could otherwise push out of the
/// kept ones and free.
pub fn kept_now() -> Vec<Tensor<1, Int>> {
    let kept = KEPT_IDS.lock().unwrap_or_else(|e| e.into_inner());
    kept.iter().map(|(_, _, ids)| ids.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many kept entries are for `slots` on `device`.
    fn entries(slots: &[usize], device: &Device) -> usize {
        let kept = KEPT_IDS.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .filter(|(s, d, _)| s.as_slice() == slots && d == device)
            .count()
    }

    /// The values are the slots; asking again takes the kept tensor instead of uploading
    /// another; another slot list is kept apart.
    #[test]
    fn kept_per_slots_and_device() {
        let device = Device::flex();
        // Slots no other test asks for, so parallel tests do not change the counts.
        let slots = [13usize, 0, 13, 7, 11];
        let read = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        assert_eq!(read(slot_ids(&slots, &device)), vec![13, 0, 13, 7, 11]);
        assert_eq!(entries(&slots, &device), 1);
        assert_eq!(read(slot_ids(&slots, &device)), vec![13, 0, 13, 7, 11]);
        assert_eq!(entries(&slots, &device), 1);
        let fewer = &slots[..3];
        assert_eq!(read(slot_ids(fewer, &device)), vec![13, 0, 13]);
        assert_eq!(entries(fewer, &device), 1);
    }
}
