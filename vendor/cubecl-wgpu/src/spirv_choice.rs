// hvq patch: whether a Vulkan adapter gets CubeCL's own SPIR-V compiler, chosen once per process
// (see vendor/README.md). Upstream decides at compile time: with the `spirv` feature every
// Vulkan adapter that has the extensions it needs gets SPIR-V, without it WGSL through naga.
// Here the feature only makes SPIR-V available: a process asks for it, so one binary can run
// and time both on the same GPU, and its default stays the WGSL it ran before.

use core::sync::atomic::{AtomicBool, Ordering};

/// False until a caller asks for SPIR-V: WGSL, as without the `spirv` feature.
static SPIRV_ON_VULKAN: AtomicBool = AtomicBool::new(false);

/// Give Vulkan adapters CubeCL's SPIR-V compiler (`true`) or WGSL (`false`, the default).
/// Read when a device is requested and when its features are registered, so it only affects
/// devices started after the call.
pub fn set_spirv_on_vulkan(enabled: bool) {
    SPIRV_ON_VULKAN.store(enabled, Ordering::Release);
}

/// Whether devices started now get SPIR-V on a Vulkan adapter (always false without the
/// `spirv` feature, which carries the compiler).
pub fn spirv_on_vulkan() -> bool {
    cfg!(feature = "spirv") && SPIRV_ON_VULKAN.load(Ordering::Acquire)
}
