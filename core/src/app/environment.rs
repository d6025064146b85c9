//! The environment variables a program reads once at start-up, before any device work
//! (`HVQ_CPU_ISA`, `HVQ_DEVICE_THREAD`, `HVQ_WGPU_COMPILER`, `HVQ_WGPU_LAYOUT`, `HVQ_GPU_MATMUL`, `HVQ_PRODUCT_CHOICES`,
//! `HVQ_TRAIN_ATTENTION`, `HVQ_GPU_ATTENTION`, `HVQ_REPLAY`): the CLI and the desktop inspector call [`apply_variables`] first, so
//! both run the same routines and refuse the same typos. The web page reads none (a browser has
//! no environment): it runs the library's defaults.

use crate::error::Result;

/// Check and apply every start-up variable; the first one set to a value it does not take is an
/// error naming it and its choices.
pub fn apply_variables() -> Result<()> {
    crate::kernels::isa::check_variable()?;
    crate::device::device_thread::apply_variable()?;
    crate::device::wgpu_compiler::apply_variable()?;
    crate::device::wgpu_layout::check_variable()?;
    crate::device::gpu_matmul::apply_variable()?;
    crate::kernels::product_choice::apply_variable()?;
    crate::kernels::train_attention::apply_variable()?;
    crate::kernels::inference_attention::apply_variable()?;
    crate::replay::apply_variable()?;
    Ok(())
}
