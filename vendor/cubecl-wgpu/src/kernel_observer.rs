// hvq patch: a process-wide observer of the kernels this backend compiles (see vendor/README.md).
// hvq's CUDA build compiles each kernel a wgpu run launches a second time, with the CUDA
// backend's compiler, so every kernel hvq runs can be checked for an NVIDIA GPU on a machine
// without one (`hvq ptx-check`). Upstream has no such hook; unset, nothing changes.

use cubecl_core::CubeKernel;
use std::sync::OnceLock;

/// Called with each kernel a wgpu server is about to compile: once per kernel (the server
/// keeps compiled pipelines), on the device's thread, before its own compilation.
pub type KernelObserver = fn(&dyn CubeKernel);

static OBSERVER: OnceLock<KernelObserver> = OnceLock::new();

/// Install the observer for the rest of the process. Only the first call takes effect: `false`
/// when another observer was installed before.
pub fn set_kernel_observer(observer: KernelObserver) -> bool {
    OBSERVER.set(observer).is_ok()
}

pub(crate) fn observe(kernel: &dyn CubeKernel) {
    if let Some(observer) = OBSERVER.get() {
        observer(kernel);
    }
}
