//! Subcommands of the `hvq` binary, one file each.

pub mod bench;
pub mod calibrate;
pub mod convert;
pub mod device_server;
pub mod eval;
pub mod inspect_options;
pub mod panic_report;
pub mod predict;
pub mod progress;
#[cfg(all(feature = "cuda", feature = "wgpu"))]
pub mod ptx_check;
pub mod selfcheck;
pub mod synth;
pub mod train;
pub mod watch;

use anyhow::Result;
use hvq::device::{DeviceChoice, Selection};

/// Parse a `--device` value, start the device and say on stderr which one runs and why
/// (stdout stays the command's results).
pub fn device(name: &str) -> Result<Selection> {
    let choice: DeviceChoice = name.parse()?;
    let selection = hvq::device::select(choice)?;
    eprintln!("device: {} — {}", selection.name(), selection.reason);
    let precision = hvq::device::precision::current();
    if precision != Default::default() {
        eprintln!(
            "precision: {precision} — {}",
            precision.effect_on(selection.backend)
        );
    }
    if selection.backend == DeviceChoice::Cpu {
        eprintln!("{}", hvq::kernels::isa::CpuIsa::detect().summary());
    } else {
        let thread = hvq::device::device_thread::current();
        if thread != hvq::device::device_thread::DeviceThread::ALL[0] {
            eprintln!(
                "device thread: {} ({})",
                thread.name(),
                hvq::device::device_thread::VARIABLE
            );
        }
        report_kernel_compiler(&selection);
        report_layout(&selection);
    }
    Ok(selection)
}

/// Say on stderr when a wgpu device pads tensors' rows as CUDA does (`HVQ_WGPU_LAYOUT=pitched`,
/// the tests' stand-in): its runs are a check, not a measurement.
fn report_layout(selection: &Selection) {
    use hvq::device::wgpu_layout::{VARIABLE, WgpuLayout, current};
    if hvq::device::wgpu_compiler::in_use(&selection.device).is_some()
        && current() == WgpuLayout::Pitched
    {
        eprintln!("memory: rows padded as CUDA pads them ({VARIABLE})");
    }
}

/// Say on stderr when a wgpu device's kernels are not compiled the default way (asked for with
/// `HVQ_WGPU_COMPILER`), and when SPIR-V was asked for and the adapter refused it.
fn report_kernel_compiler(selection: &Selection) {
    use hvq::device::wgpu_compiler::{VARIABLE, WgpuCompiler, current, in_use};
    let Some(got) = in_use(&selection.device) else {
        return;
    };
    let asked = current();
    if got == asked && got == WgpuCompiler::ALL[0] {
        return;
    }
    let why = if got == asked {
        VARIABLE
    } else {
        "the adapter lacks an extension CubeCL's SPIR-V needs"
    };
    eprintln!("kernels: compiled to {} ({why})", got.name());
}
