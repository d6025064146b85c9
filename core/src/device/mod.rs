//! Choosing a compute device by name, with a clear error when it cannot start.
//!
//! `auto` (the CLI's default) takes the fastest device that really works here: CUDA when the
//! binary was built with it and an NVIDIA driver and toolkit are present, else a hardware GPU
//! through wgpu, else the CPU. A software rasterizer (lavapipe, SwiftShader) is a wgpu adapter
//! too, but slower than the CPU backend, so `auto` passes it over. [`Selection::reason`] says
//! what was chosen and why, for the user to read.

pub mod cuda_driver;
mod denormals;
pub mod device_thread;
pub mod gpu_matmul;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod gpu_tensor;
pub mod kernel_profile;
mod list;
pub mod panic_capture;
pub mod precision;
#[cfg(all(feature = "cuda", feature = "wgpu", not(target_family = "wasm")))]
pub mod ptx_check;
mod readback;
pub mod remote;
mod shards;
pub mod wgpu_compiler;
pub mod wgpu_layout;
mod write;

pub use denormals::flush_denormals;
pub use list::create_list;
pub use readback::{read_back, read_back_async};
pub use shards::shard_sizes;
pub use write::{writable, write_in_place};

use burn::tensor::Device;

use crate::error::{HvqError, Result};

/// The backends the CLI and tests can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The best device that works here: CUDA, else a hardware GPU through wgpu, else the CPU.
    Auto,
    /// burn's pure-Rust CPU backend (flex).
    Cpu,
    /// burn's wgpu backend (Vulkan/Metal/DX12/WebGPU; lavapipe on a CPU-only Linux box).
    Wgpu,
    /// NVIDIA CUDA (build with `--features cuda`).
    Cuda,
}

impl DeviceChoice {
    /// The name the CLI takes and prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
            Self::Cuda => "cuda",
        }
    }
}

impl DeviceChoice {
    /// Images per inspection batch when the user names none: a GPU needs a batch to be busy (and
    /// has the memory for 16 at 224×224); on the CPU the batch mostly overlaps decoding with
    /// the model and keeps peak memory low.
    pub fn inspection_batch(self) -> usize {
        match self {
            Self::Cpu => 4,
            Self::Auto | Self::Wgpu | Self::Cuda => 16,
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = HvqError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" | "flex" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            other => Err(HvqError::Device(format!(
                "unknown device {other:?}: use auto, cpu, wgpu or cuda"
            ))),
        }
    }
}

/// A started device and how it was chosen.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The device, probed with a small computation.
    pub device: Device,
    /// The backend it runs on (never `Auto`).
    pub backend: DeviceChoice,
    /// The hardware's name where the backend reports one (`NVIDIA H200`, `llvmpipe …`).
    pub adapter: Option<String>,
    /// One line for the user: what was chosen and why.
    pub reason: String,
}

impl Selection {
    /// The backend and the hardware, in words (`wgpu (NVIDIA H200)`, `cpu`).
    pub fn name(&self) -> String {
        match &self.adapter {
            Some(a) => format!("{} ({a})", self.backend),
            None => self.backend.to_string(),
        }
    }
}

/// Whether this binary was built with the CUDA backend.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Start the device `choice` names; `Auto` picks one (see the module docs).
pub fn select(choice: DeviceChoice) -> Result<Selection> {
    match choice {
        DeviceChoice::Auto => select_auto(),
        explicit => {
            let device = create(explicit)?;
            let adapter = adapter_name(&device);
            Ok(Selection {
                reason: format!("{explicit} (asked for)"),
                device,
                backend: explicit,
                adapter,
            })
        }
    }
}

fn select_auto() -> Result<Selection> {
    let mut passed_over = Vec::new();
    if CUDA_BUILT {
        match create(DeviceChoice::Cuda) {
            Ok(device) => {
                return Ok(Selection {
                    adapter: adapter_name(&device),
                    reason: "auto: CUDA (this build has CUDA and an NVIDIA driver is present)"
                        .into(),
                    device,
                    backend: DeviceChoice::Cuda,
                });
            }
            Err(e) => passed_over.push(format!("CUDA: {}", first_clause(&e))),
        }
    } else {
        passed_over.push("CUDA: not in this build (--features cuda)".into());
    }
    if cfg!(feature = "wgpu") {
        match create(DeviceChoice::Wgpu) {
            Ok(device) => {
                let identity = adapter_info(&device);
                let adapter = identity.as_ref().map(|i| i.name.clone());
                // No physical card behind the adapter: a software rasterizer on the CPU.
                if identity.as_ref().is_some_and(|i| i.physical) {
                    return Ok(Selection {
                        reason: format!(
                            "auto: wgpu on a GPU ({}; {})",
                            adapter.as_deref().unwrap_or("unnamed adapter"),
                            passed_over.join("; ")
                        ),
                        device,
                        backend: DeviceChoice::Wgpu,
                        adapter,
                    });
                }
                passed_over.push(format!(
                    "wgpu: only a software adapter ({})",
                    adapter.as_deref().unwrap_or("unnamed")
                ));
            }
            Err(e) => passed_over.push(format!("wgpu: {}", first_clause(&e))),
        }
    } else {
        passed_over.push("wgpu: not in this build".into());
    }
    let device = create(DeviceChoice::Cpu)?;
    Ok(Selection {
        reason: format!("auto: CPU ({})", passed_over.join("; ")),
        device,
        backend: DeviceChoice::Cpu,
        adapter: None,
    })
}

/// An error's message without the "device error: " its Display adds.
fn without_prefix(e: &HvqError) -> String {
    match e {
        HvqError::Device(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// The first clause of why a backend was passed over, for `auto`'s one-line reason (the full
/// message is what asking for that backend by name prints).
fn first_clause(e: &HvqError) -> String {
    let msg = without_prefix(e);
    let end = [" (", "; "]
        .iter()
        .filter_map(|sep| msg.find(sep))
        .min()
        .unwrap_or(msg.len());
    msg[..end].to_string()
}

/// Who a device's adapter is, as far as hvq asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterInfo {
    /// The part's name (`NVIDIA H200`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Whether a card on a bus is behind it (not for a software rasterizer).
    pub physical: bool,
}

/// The adapter behind `device` where the backend reports one: the GPU backends do; the CPU
/// backend does not, nor does any device of a build without a GPU backend (burn answers the
/// question only with CubeCL in the build). Opens the device.
pub fn adapter_info(device: &Device) -> Option<AdapterInfo> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return device.identity().map(|i| AdapterInfo {
        name: i.name,
        physical: i.physical.is_some(),
    });
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = device;
        None
    }
}

/// The adapter's name where the backend reports one (`None` also when asking panics).
pub fn adapter_name(device: &Device) -> Option<String> {
    panic_capture::capture(|| adapter_info(device).map(|i| i.name))
        .ok()
        .flatten()
}

/// Create the device `choice` names (`Auto` as in [`select`]). wgpu and CUDA are probed with a
/// tiny computation so a missing driver is reported here, not as a panic deep inside the first
/// forward, and with a large sum ([`probe_reduction`]) so a backend that computes wrong is
/// refused rather than used.
pub fn create(choice: DeviceChoice) -> Result<Device> {
    let device = match choice {
        DeviceChoice::Auto => return select_auto().map(|s| s.device),
        DeviceChoice::Cpu => {
            flush_denormals();
            Device::flex()
        }
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(not(feature = "wgpu"))]
        DeviceChoice::Wgpu => {
            return Err(HvqError::Device(
                "this build has no wgpu support (feature `wgpu`)".into(),
            ));
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => {
            cuda_driver::check()?;
            Device::cuda(0)
        }
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda => {
            return Err(HvqError::Device(
                "this hvq was built without CUDA: rebuild with \
                 `cargo build --release -p core --features cuda` (README: CUDA)"
                    .into(),
            ));
        }
    };
    probe(&device)?;
    if choice != DeviceChoice::Cpu {
        probe_reduction(&device)?;
    }
    probe_precision(&device)?;
    Ok(device)
}

/// Elements [`probe_reduction`] sums: past 2^18, where burn's reductions on wgpu's OpenGL
/// fallback (llvmpipe through EGL, the adapter wgpu takes where no Vulkan driver is installed)
/// stop adding up (measured 2026-12-04: 2^18 + 1 ones summed to 65533, 2^20 ones to 262132,
/// while element-wise operations were right). Exact in f32 (below 2^24); 4 MiB.
const REDUCTION_PROBE_LEN: usize = (1 << 20) + 1;

/// Whether `device` sums [`REDUCTION_PROBE_LEN`] ones to their count. A backend that gets large
/// reductions wrong computes wrong losses, gradient norms and scores without an error (the
/// golden training step's gradient norm came out 0.29 for 0.98 on the OpenGL fallback), so it is
/// refused here with what to do instead, and `auto` passes it over.
pub fn probe_reduction(device: &Device) -> Result<()> {
    let d = device.clone();
    // The device passed [`probe`], so it starts; only this thread's panic is caught here, not
    // recorded process-wide as [`panic_capture::capture`] does: that would also take in
    // another thread's panic meanwhile (another test's, in a test binary), and this sum takes
    // long enough for that to happen.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let ones = burn::tensor::Tensor::<1>::ones([REDUCTION_PROBE_LEN], &d);
        crate::device::read_back(ones.sum())
    }))
    .map_err(|payload| vec![panic_capture::payload_text(payload.as_ref())]);
    let v = started(device, result)?;
    if v.first() == Some(&(REDUCTION_PROBE_LEN as f32)) {
        return Ok(());
    }
    // The reason first: `auto` shows the first clause of it.
    Err(HvqError::Device(format!(
        "large reductions are wrong on {}; {device:?} summed {REDUCTION_PROBE_LEN} ones to \
             {}, and losses, gradients and scores would be wrong with them (wgpu's OpenGL \
             fallback does this where no Vulkan driver is installed): install one (Linux: \
             mesa-vulkan-drivers on a machine without a GPU, else the GPU vendor's driver) or \
             use --device cpu",
        adapter_name(device)
            .as_deref()
            .unwrap_or("an unnamed adapter"),
        v.first().map_or("nothing".to_string(), |v| v.to_string()),
    )))
}

/// A probe's values read back, or why `device` could not start: the error its read-back
/// returned, or the panics seen meanwhile.
fn started(
    device: &Device,
    outcome: std::result::Result<Result<Vec<f32>>, Vec<String>>,
) -> Result<Vec<f32>> {
    let why = match outcome {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(e)) => without_prefix(&e),
        Err(messages) => messages.join("; "),
    };
    Err(HvqError::Device(format!(
        "{device:?} could not start: {why}"
    )))
}

/// At a half precision (`--precision bf16|f16`), whether `device` computes products in that type:
/// a tiny matrix product and convolution, cast there and back. Not every backend has every type
/// (wgpu has no bf16 products, and f16 only where the adapter offers it), so the user gets one
/// error naming the precision here instead of a panic inside the first product.
pub fn probe_precision(device: &Device) -> Result<()> {
    use burn::tensor::{FloatDType, Tensor};
    let precision = precision::current();
    let Some(half) = precision.half_dtype() else {
        return Ok(());
    };
    let d = device.clone();
    let result = panic_capture::capture_fallible(move || {
        // What kernels::products does at a half precision, on two tiny operands.
        let a = Tensor::<2>::from_floats([[1.0f32, 2.0], [3.0, 4.0]], &d).cast(half);
        let product = a.clone().matmul(a.clone());
        let kernel = Tensor::<4>::ones([1, 1, 1, 1], &d).cast(half);
        let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let conv = burn::tensor::module::conv2d(a.reshape([1, 1, 2, 2]), kernel, None, options);
        let both = Tensor::cat(vec![product.reshape([4]), conv.reshape([4])], 0);
        crate::device::read_back(both.cast(FloatDType::F32))
    });
    let failure = match result {
        // [[1,2],[3,4]]² and the identity convolution, exact in either half type.
        Ok(Ok(v)) if v == [7.0, 10.0, 15.0, 22.0, 1.0, 2.0, 3.0, 4.0] => return Ok(()),
        Ok(Ok(v)) => format!("it computed {v:?} for [7, 10, 15, 22, 1, 2, 3, 4]"),
        Ok(Err(e)) => without_prefix(&e),
        Err(messages) => messages
            .iter()
            // The backend's own error, without the `unwrap` wording it panicked with.
            .map(|m| {
                m.trim_start_matches("called `Result::unwrap()` on an `Err` value: ")
                    .trim()
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    Err(HvqError::Device(format!(
        "{device:?} cannot compute {precision} products ({failure}): use --precision f32 or \
         tf32, or another --device"
    )))
}

/// [`probe`] for devices that cannot block (WebGPU in the browser, where a panic cannot be
/// caught either: the backend's own errors are what this reports).
pub async fn probe_async(device: &Device) -> Result<()> {
    let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0, 3.0], device);
    let v = crate::device::read_back_async(t.sum()).await?;
    match v.first() {
        Some(v) if (v - 6.0).abs() < 1e-6 => Ok(()),
        other => Err(HvqError::Device(format!(
            "{device:?} computed 1+2+3 = {other:?}"
        ))),
    }
}

/// Run a tiny computation and read it back; a panic inside the backend, on this thread or one
/// of its workers, becomes an error carrying the backend's own message.
pub fn probe(device: &Device) -> Result<()> {
    let d = device.clone();
    let result = panic_capture::capture_fallible(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0f32, 2.0, 3.0], &d);
        crate::device::read_back(t.sum())
    });
    let v = started(device, result)?;
    if v.first().is_some_and(|v| (v - 6.0).abs() < 1e-6) {
        Ok(())
    } else {
        Err(HvqError::Device(format!(
            "{device:?} computed 1+2+3 = {v:?}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for c in [
            DeviceChoice::Auto,
            DeviceChoice::Cpu,
            DeviceChoice::Wgpu,
            DeviceChoice::Cuda,
        ] {
            assert_eq!(c.name().parse::<DeviceChoice>().unwrap(), c);
        }
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("auto, cpu, wgpu or cuda"), "{err}");
    }

    /// auto takes CUDA where it is built and starts, else wgpu exactly when its adapter is a
    /// physical card; lavapipe (CI and the developers' VMs have no GPU) is a software adapter,
    /// so there auto lands on the CPU and says why it passed over each.
    #[test]
    fn auto_passes_over_software_adapters_and_says_why() {
        let cuda = create(DeviceChoice::Cuda);
        let wgpu = create(DeviceChoice::Wgpu)
            .ok()
            .and_then(|d| adapter_info(&d));
        let hardware = wgpu.as_ref().is_some_and(|i| i.physical);
        if let Some(i) = &wgpu
            && (i.name.contains("llvmpipe") || i.name.contains("SwiftShader"))
        {
            assert!(!hardware, "{} taken for a card", i.name);
        }
        let s = select(DeviceChoice::Auto).unwrap();
        match &cuda {
            Ok(_) => {
                assert_eq!(s.backend, DeviceChoice::Cuda, "{}", s.reason);
                return;
            }
            Err(e) if CUDA_BUILT => {
                let why = format!("CUDA: {}", first_clause(e));
                assert!(s.reason.contains(&why), "{} lacks {why:?}", s.reason);
            }
            Err(_) => assert!(s.reason.contains("CUDA: not in this build"), "{}", s.reason),
        }
        if hardware {
            assert_eq!(s.backend, DeviceChoice::Wgpu, "{}", s.reason);
        } else {
            assert_eq!(s.backend, DeviceChoice::Cpu, "{}", s.reason);
            assert!(s.reason.starts_with("auto: CPU ("), "{}", s.reason);
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_build_without_it_says_how_to_rebuild() {
        let err = create(DeviceChoice::Cuda).unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
