//! Which compiler turns the GPU kernels (burn's and hvq's, all written in CubeCL) into shaders
//! on a Vulkan adapter, and `HVQ_WGPU_COMPILER`, which picks it for a process.
//!
//! CubeCL writes either WGSL, which wgpu's naga translates into the SPIR-V the Vulkan driver
//! takes (hvq's route since its start, and the only one in a browser's WebGPU), or SPIR-V
//! itself (burn's `vulkan` feature, core's `vulkan`: native builds only). Its own SPIR-V skips
//! the translation and asks the driver for more: kernel parameters as push constants, buffers
//! as device addresses, the subgroup operations and barriers cubek's reductions and products use
//! when a device has them. The patched cubecl-wgpu (`vendor/`) makes SPIR-V a process's choice
//! rather than the feature's, so one binary can time both on the same GPU
//! (`scripts/gpu-bench.sh --compiler-ab`). WGSL stays the default until a GPU says SPIR-V is
//! faster: on lavapipe it is slower (README, "CUDA"). A Vulkan adapter without the extensions
//! CubeCL's SPIR-V needs (the Vulkan memory model, buffer device addresses) gets WGSL either
//! way; Metal, DirectX and OpenGL adapters always do, and CUDA compiles its own way. Read once,
//! at start-up ([`apply_variable`], the CLI's first step); [`in_use`] says what a started device
//! got.

use burn::tensor::Device;

use crate::error::Result;

/// The environment variable that picks the compiler.
pub const VARIABLE: &str = "HVQ_WGPU_COMPILER";

/// What CubeCL writes for a Vulkan adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WgpuCompiler {
    /// WGSL, which wgpu's naga translates (the default; the only choice without the `vulkan`
    /// feature).
    Wgsl,
    /// SPIR-V, by CubeCL's own compiler (builds with the `vulkan` feature).
    Spirv,
}

impl WgpuCompiler {
    /// Every choice, the default first.
    pub const ALL: [WgpuCompiler; 2] = [WgpuCompiler::Wgsl, WgpuCompiler::Spirv];

    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            WgpuCompiler::Spirv => "spirv",
            WgpuCompiler::Wgsl => "wgsl",
        }
    }

    /// The choice named `name` (one of [`WgpuCompiler::ALL`]'s names).
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(VARIABLE, name, &Self::ALL, Self::name)
    }
}

/// Read `HVQ_WGPU_COMPILER` (unset: the default, the first of [`WgpuCompiler::ALL`])
/// and apply it to the wgpu devices this process starts from now on: a typo is an error rather
/// than a silent measurement of the default, and so is `spirv` in a build without the compiler.
pub fn apply_variable() -> Result<WgpuCompiler> {
    let compiler = crate::env_setting::read(VARIABLE, WgpuCompiler::ALL[0], WgpuCompiler::parse)?;
    set(compiler)?;
    Ok(compiler)
}

/// Apply `compiler` to the wgpu devices started after this call (one started already keeps
/// its own).
pub fn set(compiler: WgpuCompiler) -> Result<()> {
    #[cfg(all(feature = "vulkan", not(target_family = "wasm")))]
    {
        cubecl::wgpu::set_spirv_on_vulkan(compiler == WgpuCompiler::Spirv);
        Ok(())
    }
    #[cfg(not(all(feature = "vulkan", not(target_family = "wasm"))))]
    match compiler {
        WgpuCompiler::Wgsl => Ok(()),
        WgpuCompiler::Spirv => Err(crate::error::HvqError::Config(format!(
            "{VARIABLE}=spirv: this build has no SPIR-V compiler (built without core's \
             `vulkan` feature); it writes WGSL"
        ))),
    }
}

/// The choice in force for wgpu devices started now (what [`set`] last applied, else the
/// default).
pub fn current() -> WgpuCompiler {
    #[cfg(all(feature = "vulkan", not(target_family = "wasm")))]
    if cubecl::wgpu::spirv_on_vulkan() {
        return WgpuCompiler::Spirv;
    }
    WgpuCompiler::Wgsl
}

/// What compiled the kernels of `device` (started if it was not): `Some` of a choice for a wgpu
/// device (WGSL also where SPIR-V was asked for but the adapter lacks what it needs), `None` for
/// the CPU and CUDA, which compile their own way.
pub fn in_use(device: &Device) -> Option<WgpuCompiler> {
    runtime_name(device).and_then(|name| match name {
        "wgpu<spirv>" => Some(WgpuCompiler::Spirv),
        "wgpu<wgsl>" => Some(WgpuCompiler::Wgsl),
        _ => None,
    })
}

/// The name CubeCL gives `device`'s runtime (`wgpu<spirv>`, `wgpu<wgsl>`, `cuda`), `None` for a
/// device outside CubeCL (the CPU).
fn runtime_name(device: &Device) -> Option<&'static str> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    {
        // A one-element tensor's runtime is the device's (the CPU backend's is not CubeCL's).
        burn::tensor::Tensor::<1>::zeros([1], device)
            .try_into_primitive::<burn_cubecl::CubeBackend>()
            .ok()
            .map(|t| t.client.name())
    }
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    {
        let _ = device;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for c in WgpuCompiler::ALL {
            assert_eq!(WgpuCompiler::parse(c.name()).unwrap(), c);
            assert_eq!(WgpuCompiler::parse(&c.name().to_uppercase()).unwrap(), c);
        }
        let e = WgpuCompiler::parse("msl").unwrap_err().to_string();
        assert!(
            e.contains(VARIABLE) && e.contains("spirv") && e.contains("wgsl"),
            "{e}"
        );
    }

    #[test]
    fn wgsl_is_the_default() {
        assert_eq!(WgpuCompiler::ALL[0], WgpuCompiler::Wgsl);
    }
}
