//! Dropout masks on the CPU backend from a counter-based generator.
//!
//! burn's `Tensor::random(.., Bernoulli)` draws every element from a ChaCha generator one at a
//! time; with the reference's dropout 0.1 on every attention matrix (batch × heads × 196 × 196)
//! that made an official-preset training step far slower than the same step without dropout.
//! Here element `i` of a mask is decided by SplitMix64 of `seed + i` (a counter-based generator:
//! any element can be computed independently, so the work splits across threads and the result
//! does not depend on how). The seed is drawn from the device's generator, so masks follow the
//! device seed exactly as burn's would (per-epoch reseeding keeps `--resume` exact).

use burn::backend::DispatchDevice;
use burn::tensor::{Device, Distribution, Int, Shape, Tensor, TensorData};

/// The keep-mask of inverted dropout, `1/keep` with probability `keep` and 0 otherwise, shaped
/// `shape`, on `device` (as a constant when the device tracks gradients). `None` off the CPU
/// backend, where burn's generator runs on the device.
pub fn dropout_mask<const D: usize>(shape: Shape, keep: f64, device: &Device) -> Option<Tensor<D>> {
    let dropout = draw(device, keep)?;
    let n = shape.num_elements();
    let mut values = vec![0f32; n];
    super::for_each_chunk(&mut values, usize::MAX, |offset, part, _| {
        dropout.fill_at(part, offset)
    });
    let mask = Tensor::<D>::from_data(TensorData::new(values, shape), &device.clone().inner());
    Some(if device.is_autodiff() {
        mask.autodiff()
    } else {
        mask
    })
}

/// One draw of dropout: the seed of its counter-based masks and the keep probability.
#[derive(Clone, Copy, Debug)]
pub(super) struct Dropout {
    seed: u64,
    keep: f64,
}

/// A seed from `device`'s generator for masks with keep probability `keep`; `None` off the
/// CPU backend. Every mask of one draw is the same function of the element index.
pub(super) fn draw(device: &Device, keep: f64) -> Option<Dropout> {
    let plain = device.clone().inner();
    if !matches!(plain.as_dispatch(), DispatchDevice::Flex(_)) {
        return None;
    }
    // Three 30-bit draws from the device generator (its integers may be 32-bit) make the seed.
    let draws: Vec<i64> =
        Tensor::<1, Int>::random([3], Distribution::Uniform(0.0, 1_073_741_824.0), &plain)
            .into_data()
            .convert::<i64>()
            .try_into_vec::<i64>()
            .ok()?;
    let seed = (draws[0] as u64) | (draws[1] as u64) << 30 | (draws[2] as u64) << 60;
    Some(Dropout { seed, keep })
}

/// SplitMix64's output function: a bijective mix of a 64-bit counter.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Dropout {
    /// `values[j]` = element `offset + j` of the mask: `1/keep` if the top 24 bits of
    /// `mix(seed + i·γ)` fall below `keep·2²⁴`, else 0.
    pub(super) fn fill_at(&self, values: &mut [f32], offset: usize) {
        const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
        let threshold = (self.keep * (1u64 << 24) as f64).round() as u64;
        let scale = (1.0 / self.keep) as f32;
        for (j, v) in values.iter_mut().enumerate() {
            let counter = self
                .seed
                .wrapping_add(((offset + j) as u64).wrapping_mul(GAMMA));
            *v = if mix(counter) >> 40 < threshold {
                scale
            } else {
                0.0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(n: usize, keep: f64, device: &Device) -> Vec<f32> {
        dropout_mask::<1>(Shape::new([n]), keep, device)
            .expect("flex")
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn masks_follow_the_device_seed_and_have_the_right_rate() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex();
        device.seed(9);
        let a = mask(300_000, 0.9, &device);
        device.seed(9);
        assert_eq!(a, mask(300_000, 0.9, &device), "same seed, same mask");
        device.seed(10);
        assert_ne!(a, mask(300_000, 0.9, &device), "another seed, another mask");
        // Rate p = 0.1 in each half and over odd/even positions (counter-based: no drift, no
        // alternation), within 5 binomial standard deviations.
        let scale = (1.0 / 0.9) as f32;
        assert!(a.iter().all(|&v| v == 0.0 || v == scale));
        let check = |part: Vec<f32>| {
            let n = part.len() as f64;
            let zeros = part.iter().filter(|&&v| v == 0.0).count() as f64;
            let sd = (n * 0.1 * 0.9).sqrt();
            assert!((zeros - 0.1 * n).abs() < 5.0 * sd, "{zeros} zeros of {n}");
        };
        check(a[..150_000].to_vec());
        check(a[150_000..].to_vec());
        check(a.iter().step_by(2).copied().collect());
        check(a.iter().skip(1).step_by(2).copied().collect());
    }

    #[test]
    fn autodiff_devices_get_a_constant_mask() {
        let _generator = crate::test_rng::lock();
        let device = Device::flex().autodiff();
        let m = dropout_mask::<2>(Shape::new([4, 5]), 0.5, &device).expect("flex");
        assert!(m.is_autodiff());
        assert!(!m.is_require_grad());
    }
}
