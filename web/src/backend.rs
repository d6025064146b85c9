//! Choosing where the model runs in the browser: WebGPU when the browser has it and it works,
//! otherwise burn's CPU backend compiled to wasm, with a notice saying why.

use burn::tensor::Device;
use burn::tensor::wgpu::WgpuSetup;

/// An opened device. `setup` keeps the WebGPU instance and adapter referenced for the model's
/// lifetime: when the browser collects them, Chromium refuses to create further pipelines
/// ("A valid external Instance reference no longer exists").
pub struct Opened {
    /// The device to build the model on.
    pub device: Device,
    /// What it is.
    pub backend: Backend,
    /// Why the CPU is used although WebGPU was wanted.
    pub notice: Option<String>,
    /// The WebGPU handles, while the model lives.
    pub setup: Option<WgpuSetup>,
}

/// What the page asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// WebGPU, falling back to the CPU with a notice.
    Auto,
    /// WebGPU or an error.
    WebGpu,
    /// The CPU.
    Cpu,
}

impl std::str::FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "webgpu" | "gpu" => Ok(Self::WebGpu),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown backend {other:?}: use auto, webgpu or cpu"
            )),
        }
    }
}

/// What the model runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// burn's wgpu backend on the browser's WebGPU.
    WebGpu,
    /// burn's CPU backend (flex), single-threaded wasm.
    Cpu,
}

impl Backend {
    /// The name the page shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebGpu => "webgpu",
            Self::Cpu => "cpu",
        }
    }
}

/// Open the device for `choice`, with a notice when `Auto` fell back to the CPU.
pub async fn open(choice: BackendChoice) -> Result<Opened, String> {
    let cpu = |notice| Opened {
        device: Device::flex(),
        backend: Backend::Cpu,
        notice,
        setup: None,
    };
    let gpu = |(device, setup)| Opened {
        device,
        backend: Backend::WebGpu,
        notice: None,
        setup: Some(setup),
    };
    match choice {
        BackendChoice::Cpu => Ok(cpu(None)),
        BackendChoice::WebGpu => Ok(gpu(webgpu().await?)),
        BackendChoice::Auto => match webgpu().await {
            Ok(opened) => Ok(gpu(opened)),
            Err(why) => Ok(cpu(Some(format!(
                "WebGPU is not available ({why}); running on the CPU, which is slower"
            )))),
        },
    }
}

/// Start burn's wgpu runtime on WebGPU and check it computes.
async fn webgpu() -> Result<(Device, WgpuSetup), String> {
    #[cfg(target_arch = "wasm32")]
    if !has_navigator_gpu() {
        return Err("this browser has no navigator.gpu".into());
    }
    let (device, setup) = Device::wgpu_options()
        .init_with_setup_async()
        .await
        .map_err(|e| format!("WebGPU did not start: {e}"))?;
    hvq::device::probe_async(&device)
        .await
        .map_err(|e| format!("WebGPU did not compute: {e}"))?;
    Ok((device, setup))
}

/// `navigator.gpu` exists (in a window or a worker).
#[cfg(target_arch = "wasm32")]
fn has_navigator_gpu() -> bool {
    use wasm_bindgen::JsValue;
    let global = js_sys::global();
    js_sys::Reflect::get(&global, &JsValue::from_str("navigator"))
        .ok()
        .filter(|n| !n.is_undefined() && !n.is_null())
        .and_then(|n| js_sys::Reflect::get(&n, &JsValue::from_str("gpu")).ok())
        .map(|g| !g.is_undefined() && !g.is_null())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse() {
        assert_eq!("auto".parse(), Ok(BackendChoice::Auto));
        assert_eq!("webgpu".parse(), Ok(BackendChoice::WebGpu));
        assert_eq!("cpu".parse(), Ok(BackendChoice::Cpu));
        assert!(
            "cuda"
                .parse::<BackendChoice>()
                .unwrap_err()
                .contains("cuda")
        );
    }
}
