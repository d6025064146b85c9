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

/// `parts` stacked along a new first axis; one part as a view with that axis; plain tensors on
/// a GPU eight parts a launch (`kernels::stack_on_gpu`) rather than one.
pub(super) fn stack<const D: usize, const E: usize>(mut parts: Vec<Tensor<D>>) -> Tensor<E> {
    if parts.len() == 1 {
        parts.pop().expect("one part").unsqueeze_dim(0)
    } else if let Some(stacked) = crate::kernels::stack_on_gpu(&parts) {
        stacked
    } else {
        Tensor::stack(parts, 0)
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    use crate::device::kernel_profile::KernelProfiler;

    /// On wgpu, plain parts stack eight to a launch, bit for bit burn's `stack`: 9 parts in 2
    /// launches, 3 in 1, one part in none (a view); a transposed part, parts tracked by autodiff
    /// (which keep their gradient) and parts of different shapes are left to burn.
    #[test]
    fn plain_parts_stack_eight_to_a_launch_as_burn_stacks_them() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(3);
        let bits = |t: Tensor<3>| {
            t.into_data()
                .try_to_vec::<f32>()
                .unwrap()
                .into_iter()
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        };
        for (count, launches) in [(9, 2), (3, 1), (1, 0)] {
            let parts: Vec<Tensor<2>> = (0..count)
                .map(|_| Tensor::random([4, 5], Distribution::Normal(0.0, 1.0), &device))
                .collect();
            let want = Tensor::stack::<3>(parts.clone(), 0);
            let _ = bits(stack::<2, 3>(parts.clone()));
            let profiler = KernelProfiler::start("stack");
            let got = stack::<2, 3>(parts);
            let profile = profiler.finish();
            assert_eq!(profile.stages[0].launches, launches, "{count} parts");
            assert_eq!(got.dims(), [count, 4, 5]);
            assert_eq!(bits(got), bits(want), "{count} parts");
        }
        let ad = device.clone().autodiff();
        let tracked: Vec<Tensor<2>> = (0..3)
            .map(|i| {
                Tensor::<2>::ones([2, 3], &ad)
                    .mul_scalar(i as f64 + 1.0)
                    .require_grad()
            })
            .collect();
        let stacked = stack::<2, 3>(tracked.clone());
        assert!(stacked.is_autodiff());
        let grads = stacked.mul_scalar(2.0).sum().backward();
        let grad = tracked[1]
            .grad(&grads)
            .expect("a gradient through the stack");
        assert_eq!(grad.into_data().try_to_vec::<f32>().unwrap(), vec![2.0; 6]);
        // A transposed part is left to burn (its flat view would be a copy): same values.
        let square = |_| Tensor::<2>::random([4, 4], Distribution::Normal(0.0, 1.0), &device);
        let mut mixed: Vec<Tensor<2>> = (0..3).map(square).collect();
        mixed[1] = mixed[1].clone().transpose();
        assert!(crate::kernels::stack_on_gpu::<2, 3>(&mixed).is_none());
        assert_eq!(
            bits(stack::<2, 3>(mixed.clone())),
            bits(Tensor::stack::<3>(mixed, 0))
        );
        assert!(
            crate::kernels::stack_on_gpu::<2, 3>(&[
                Tensor::ones([2, 3], &device),
                Tensor::ones([3, 2], &device)
            ])
            .is_none(),
            "shapes differ"
        );
    }
}
