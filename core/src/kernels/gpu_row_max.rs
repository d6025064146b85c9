//! Each row's largest value, `max_dim(1)` of a `[rows, columns]` tensor, on the GPU (CubeCL:
//! wgpu, CUDA): the image score's last step (the pooled map's maximum, 209² values an image at
//! the official size).
//!
//! burn's reduction, built without its autotuner as hvq is, gives each row one thread that
//! walks it alone: at batch 8 an H200 took 2.6 ms for the 8 scores (2026-12-04 profile), PyTorch
//! 0.01. Here each cube of 256 threads (`gpu::CUBE_THREADS`) takes a chunk of [`CHUNK`] values of
//! a row (neighbouring threads read neighbouring values), takes their maximum pairwise in shared
//! memory, and writes one per chunk; the chunks' maxima are a smaller `[rows, chunks]`, reduced
//! the same way until one column is left (two launches for the official map).

use burn::tensor::Tensor as BurnTensor;
use cubecl::prelude::*;

use super::gpu::{CUBE_THREADS as THREADS, F32, cube_max, empty_shaped, plain_f32, to_burn};

/// Values one cube takes: 16 loads a thread.
const CHUNK: usize = 16 * THREADS;

#[cube(launch)]
fn row_max_kernel<F: Float>(x: &Tensor<F>, maxima: &mut Tensor<F>, #[define(F)] _dtype: ElemType) {
    let (chunk, row) = (CUBE_POS_X as usize, CUBE_POS_Y as usize);
    let thread = UNIT_POS_X as usize;
    let columns = x.shape(1);
    // Rows lie `pitch` values apart: CUDA pads the rows of burn's outputs.
    let pitch = x.stride(0);
    let mut end = (chunk + 1) * CHUNK;
    if end > columns {
        end = columns;
    }
    // Every cube has at least one value (the launch counts whole chunks only), so a thread
    // without any of its own starts from the chunk's first.
    let mut best = x[row * pitch + chunk * CHUNK];
    let mut j = chunk * CHUNK + thread;
    while j < end {
        best = F::max(best, x[row * pitch + j]);
        j += THREADS;
    }
    let mut partial = Shared::<[F]>::new_slice(THREADS);
    let largest = cube_max::<F>(&mut partial, thread, best, THREADS);
    if thread == 0 {
        let chunks = maxima.shape(1);
        maxima[row * chunks + chunk] = largest;
    }
}

/// The largest value of each row of `x [rows, columns]`, `[rows]`; `None` when `x` is not a
/// plain f32 tensor of this process's GPU backend or has no columns (the caller composes it).
/// Rows padded apart are read where they lie; another layout is copied first.
pub fn row_max(x: &BurnTensor<2>) -> Option<BurnTensor<1>> {
    let [rows, columns] = x.dims();
    if rows == 0 || columns == 0 || rows > u16::MAX as usize {
        return None;
    }
    let (mut values, _) = super::gpu::rows(plain_f32(x.clone())?);
    let mut columns = columns;
    loop {
        let chunks = columns.div_ceil(CHUNK);
        let maxima = empty_shaped(&values, vec![rows, chunks]);
        row_max_kernel::launch(
            &maxima.client,
            CubeCount::Static(chunks as u32, rows as u32, 1),
            CubeDim::new_1d(THREADS as u32),
            values.into_tensor_arg(),
            maxima.clone().into_tensor_arg(),
            F32,
        );
        if chunks == 1 {
            return Some(to_burn::<2>(maxima).reshape([rows]));
        }
        (values, columns) = (maxima, chunks);
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tensor};

    use crate::kernels::gpu::values;

    /// On wgpu, each row's maximum exactly (a maximum rounds nothing), with one launch per
    /// level of chunks: one column, a row shorter than a cube's threads, one of exactly a chunk,
    /// the official pooled map's 209² (two levels), and rows whose maximum is their first or
    /// last value or lies in the last, partial chunk; all values negative (a maximum started
    /// from zero would be wrong). Rows padded apart are read in place, a transposed input copied.
    #[test]
    fn each_rows_maximum_exactly() {
        let device = crate::device::create(crate::device::DeviceChoice::Wgpu).unwrap();
        let _generator = crate::test_rng::lock();
        device.seed(5);
        for (rows, columns, launches) in [
            (3, 1, 1),
            (2, 100, 1),
            (4, CHUNK, 1),
            (8, 209 * 209, 2),
            (2, 5 * CHUNK + 3, 2),
        ] {
            let x =
                Tensor::<2>::random([rows, columns], Distribution::Uniform(-50.0, -1.0), &device);
            let mut host = values(x.clone());
            // Row 0's maximum at its first value, row 1's at its last (in the last chunk).
            host[0] = -0.5;
            if rows > 1 && columns > 1 {
                host[2 * columns - 1] = -0.25;
            }
            let x = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(host.clone(), [rows, columns]),
                &device,
            );
            let _ = values(row_max(&x).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("max");
            let got = values(row_max(&x).unwrap());
            assert_eq!(profiler.finish().stages[0].launches, launches);
            // Rows padded apart (CUDA's layout of burn's outputs; NaN padding): read in place.
            let padded = crate::kernels::gpu::padded_rows(x.clone());
            let _ = values(row_max(&padded).unwrap());
            let profiler = crate::device::kernel_profile::KernelProfiler::start("max");
            assert_eq!(
                values(row_max(&padded).unwrap()),
                got,
                "padded ({rows}, {columns})"
            );
            assert_eq!(profiler.finish().stages[0].launches, launches);
            for (r, g) in got.iter().enumerate() {
                let want = host[r * columns..(r + 1) * columns]
                    .iter()
                    .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                assert_eq!(*g, want, "({rows}, {columns}) row {r}");
            }
        }
        let cpu = crate::device::create(crate::device::DeviceChoice::Cpu).unwrap();
        assert!(row_max(&Tensor::<2>::ones([2, 3], &cpu)).is_none());
        // Rows not evenly spaced: copied first, then the same kernel.
        let x = Tensor::<2>::random([4, 3], Distribution::Uniform(-50.0, -1.0), &device);
        let profiler = crate::device::kernel_profile::KernelProfiler::start("max");
        let transposed = values(row_max(&x.clone().transpose()).unwrap());
        assert_eq!(profiler.finish().stages[0].launches, 2);
        let host = values(x);
        let want: Vec<f32> = (0..3)
            .map(|c| {
                (0..4)
                    .map(|r| host[r * 3 + c])
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect();
        assert_eq!(transposed, want);
    }
}
