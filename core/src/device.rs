//! Choosing a compute device by name, with a clear error when it cannot start.

use burn::tensor::Device;

use crate::error::{HvqError, Result};

/// The backends the CLI and tests can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// burn's pure-Rust CPU backend (flex).
    Cpu,
    /// burn's wgpu backend (Vulkan/Metal/DX12/WebGPU; lavapipe on a CPU-only Linux box).
    Wgpu,
    /// NVIDIA CUDA (build with `--features cuda`).
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = HvqError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(HvqError::Device(format!(
                "unknown device {other:?}: use cpu, wgpu or cuda"
            ))),
        }
    }
}

/// Create the device. wgpu and CUDA are probed with a tiny computation so a missing driver is
/// reported here, not as a panic deep inside the first forward.
pub fn create(choice: DeviceChoice) -> Result<Device> {
    let device = match choice {
        DeviceChoice::Cpu => Device::flex(),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(not(feature = "wgpu"))]
        DeviceChoice::Wgpu => {
            return Err(HvqError::Device(
                "this build has no wgpu support (feature `wgpu`)".into(),
            ));
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => Device::cuda(0),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda => {
            return Err(HvqError::Device(
                "this build has no CUDA support: rebuild with `--features cuda`".into(),
            ));
        }
    };
    probe(&device)?;
    Ok(device)
}

/// [`probe`] for devices that cannot block (WebGPU in the browser, where a panic cannot be
/// caught either: the backend's own errors are what this reports).
pub async fn probe_async(device: &Device) -> Result<()> {
    let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0, 3.0], device);
    let v = crate::weights::read_back_async(t.sum()).await?;
    match v.first() {
        Some(v) if (v - 6.0).abs() < 1e-6 => Ok(()),
        other => Err(HvqError::Device(format!(
            "{device:?} computed 1+2+3 = {other:?}"
        ))),
    }
}

/// Run a tiny computation and read it back; any panic inside the backend becomes an error.
pub fn probe(device: &Device) -> Result<()> {
    let d = device.clone();
    let result = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0, 3.0], &d);
        t.sum().into_scalar::<f32>()
    });
    match result {
        Ok(v) if (v - 6.0).abs() < 1e-6 => Ok(()),
        Ok(v) => Err(HvqError::Device(format!("{device:?} computed 1+2+3 = {v}"))),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "backend panicked".into());
            Err(HvqError::Device(format!(
                "{device:?} could not start: {msg}"
            )))
        }
    }
}
