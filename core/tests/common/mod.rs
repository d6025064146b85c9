//! Shared helpers for the integration tests: the golden directory, backends, comparisons.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod tree;

use burn::tensor::{Device, Int, Tensor};
use hvq::weights::{HostTensor, TensorMap};

/// `HVQ_GOLDEN_DIR`, or `../shared/golden` relative to the repository root.
pub fn golden_dir() -> PathBuf {
    match std::env::var_os("HVQ_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"),
    }
}

/// Repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A backend by name; failing to start is a test failure, never a skip. `HVQ_GPU_MATMUL` picks
/// the GPU products' routine, `HVQ_GPU_ATTENTION` inference's attention kernel and
/// `HVQ_TRAIN_ATTENTION` training's attention as they do for the CLI (`auto` unset: on lavapipe
/// burn's flash kernel and the composed training attention; scripts/test.sh runs the wgpu
/// golden tests once more on hvq's tiled product kernel, split attention kernel and fused
/// training attention).
pub fn device(name: &str) -> Device {
    hvq::device::gpu_matmul::apply_variable().expect("HVQ_GPU_MATMUL names a routine");
    hvq::kernels::inference_attention::apply_variable()
        .expect("HVQ_GPU_ATTENTION names an attention kernel");
    hvq::kernels::train_attention::apply_variable()
        .expect("HVQ_TRAIN_ATTENTION names a training attention");
    let compiler = hvq::device::wgpu_compiler::apply_variable()
        .expect("HVQ_WGPU_COMPILER names a compiler this build has");
    let choice = name.parse().expect("known backend name");
    let device = hvq::device::create(choice)
        .unwrap_or_else(|e| panic!("backend {name} must be available for this test: {e}"));
    // A wgpu test runs the kernels the compiler asked for produced (lavapipe has what CubeCL's
    // SPIR-V needs), so a run with HVQ_WGPU_COMPILER=spirv really tests CubeCL's SPIR-V.
    if name == "wgpu" {
        assert_eq!(
            hvq::device::wgpu_compiler::in_use(&device),
            Some(compiler),
            "the wgpu device's kernel compiler"
        );
    }
    device
}

/// A golden file's float tensors and its raw bytes (for the int64 ones).
pub struct Golden {
    pub floats: TensorMap,
    bytes: Vec<u8>,
    name: String,
}

impl Golden {
    pub fn open(file: &str) -> Golden {
        let path = golden_dir().join(file);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let floats = TensorMap::from_safetensors(&bytes, file).expect("golden file parses");
        Golden {
            floats,
            bytes,
            name: file.to_string(),
        }
    }

    pub fn f(&self, name: &str) -> &HostTensor {
        self.floats
            .get(name)
            .unwrap_or_else(|| panic!("{}: no float tensor {name}", self.name))
    }

    pub fn t<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        self.f(name).to_tensor(device)
    }

    /// An int64 tensor as (shape, values).
    pub fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let st = safetensors::SafeTensors::deserialize(&self.bytes).expect("parses");
        let v = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", self.name));
        assert_eq!(v.dtype(), safetensors::Dtype::I64, "{name} is int64");
        let vals = v
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (v.shape().to_vec(), vals)
    }
}

pub fn host<const D: usize>(t: Tensor<D>) -> HostTensor {
    HostTensor::from_tensor(&t)
}

pub fn host_ints<const D: usize>(t: Tensor<D, Int>) -> (Vec<usize>, Vec<i64>) {
    let data = t.into_data();
    (
        data.shape().to_vec(),
        data.try_into_vec_as::<i64>().unwrap(),
    )
}

/// Largest |got − want| and where.
pub fn max_abs_diff(got: &HostTensor, want: &HostTensor) -> (f32, usize) {
    got.data
        .iter()
        .zip(&want.data)
        .enumerate()
        .map(|(i, (a, b))| ((a - b).abs(), i))
        .fold(
            (0.0, 0),
            |m, x| if x.0 > m.0 || x.0.is_nan() { x } else { m },
        )
}

/// Assert shapes equal and max |got − want| ≤ atol + rtol·max|want|. Prints the figures so the
/// test log records the tolerances actually reached.
pub fn assert_close(what: &str, got: &HostTensor, want: &HostTensor, atol: f32, rtol: f32) -> f32 {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, i) = max_abs_diff(got, want);
    let tol = atol + rtol * scale;
    println!("{what:<48} max|diff| {d:.3e} (tolerance {tol:.1e}, max|want| {scale:.3e})");
    assert!(
        d <= tol,
        "{what}: max |diff| {d:e} at flat index {i} (got {}, want {}), tolerance {tol:e}",
        got.data[i],
        want.data[i]
    );
    d
}
