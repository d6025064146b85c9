//! Every kernel a wgpu run compiles, compiled again for an NVIDIA GPU, on a machine without one
//! (`hvq ptx-check`, `scripts/ptx-check.sh`).
//!
//! Why: hvq's CUDA path had never run when its ~30 own kernels were written; they were tested on
//! wgpu (lavapipe here), and a GPU to try CUDA on is lent for minutes at a time. burn's CUDA
//! backend compiles each kernel in-process (cubecl-llvm: the kernel's IR through pliron and LLVM's
//! NVPTX back end to PTX), which needs no GPU; only loading the PTX does. So a wgpu run with an
//! observer in its compiler (vendor/cubecl-wgpu's `set_kernel_observer`) hands each kernel
//! definition, once, to that same compiler with the options burn's CUDA runtime gives an NVIDIA
//! device, for each of several architectures ([`NvidiaTarget`]: the H100/H200 the project measures
//! on, and the older parts users run: T4, A100, RTX 30 and 40), and keeps the PTX, which NVIDIA's
//! `ptxas` then assembles for that architecture (the script). A kernel that cubecl-llvm refuses,
//! panics on, or emits PTX `ptxas` rejects would have failed on the GPU at its first launch.
//!
//! What it cannot see: a kernel whose definition depends on the device's properties is checked as
//! wgpu defines it (burn's matrix products pick tensor-core routines on CUDA, which a wgpu adapter
//! has none of; hvq's own kernels define the same on both, plane sizes aside), and whether the PTX
//! computes the right numbers (golden parity and `hvq selfcheck` on the GPU).

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cubecl::CubeKernel;
use cubecl::ir::nvidia::SmArch;
use cubecl_llvm::nvptx::ptx_version::PtxVersion;
use cubecl_llvm::{LlvmTarget, PlironArtifact, PlironCompiler, PlironOptions};
use serde::Serialize;

use crate::error::{HvqError, Result};

/// The NVIDIA device the kernels are compiled for, as burn's CUDA runtime describes one to its
/// compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvidiaTarget {
    /// Compute capability, packed as CUDA's runtime reports it: 90 for 9.0 (H100, H200).
    pub compute_capability: u32,
    /// The driver's CUDA version as `cuDriverGetVersion` reports it (13000 for 13.0), which
    /// decides the PTX version emitted.
    pub driver_version: i32,
}

impl NvidiaTarget {
    /// The driver the project's GPU machine has (580, CUDA 13.0).
    pub const DRIVER_13_0: i32 = 13000;

    /// The architectures checked by default, on [`Self::DRIVER_13_0`]: 9.0 (H100, H200), 8.9
    /// (RTX 40, L4), 8.6 (RTX 30, A10), 8.0 (A100) and 7.5 (T4, RTX 20: the oldest CUDA 13
    /// supports).
    pub const DEFAULT_CAPABILITIES: [u32; 5] = [90, 89, 86, 80, 75];

    /// The architecture as `ptxas -arch` and the PTX's `.target` name it (`sm_90a`: burn's
    /// CUDA runtime targets the architecture-specific variant from 9.0 on).
    pub fn architecture(self) -> String {
        self.sm_arch().target_cpu()
    }

    fn sm_arch(self) -> SmArch {
        // Every part of compute capability 7.0 or later has tensor cores but the GTX 16 Turings
        // (7.5, as the T4 and RTX 20, which have them): checked as the parts that have them.
        SmArch::new(self.compute_capability, self.compute_capability >= 70)
    }

    fn options(self) -> PlironOptions {
        PlironOptions {
            sm_arch: Some(self.sm_arch()),
            ptx_version: PtxVersion::for_driver(self.driver_version),
            // burn's CUDA runtime passes scalars and metadata as grid constants from 7.0 on
            // (cubecl-cuda's runtime.rs), so its kernels are compiled that way there.
            grid_constants: self.compute_capability >= 70,
            ..Default::default()
        }
    }
}

/// One kernel as the NVIDIA compiler took it.
#[derive(Clone, Debug, Serialize)]
pub struct KernelPtx {
    /// The kernel's name (its Rust type, with its compile-time parameters).
    pub name: String,
    /// The architecture compiled for (`sm_90a`, `sm_86`, ...).
    pub architecture: String,
    /// A key for this definition (the hash of cubecl's kernel id, which holds the compile-time
    /// parameters, launch shape and checking mode). Stable between runs of one binary, so runs
    /// of several workloads into one folder share files.
    pub key: String,
    /// The PTX file written (`<key>-<architecture>.ptx`), relative to the output folder; `None`
    /// when compiling failed.
    pub ptx_file: Option<String>,
    /// Shared memory a launch reserves, in bytes.
    pub shared_memory_bytes: Option<usize>,
    /// Why the compiler refused the kernel (or panicked on it).
    pub error: Option<String>,
}

/// What one run saw.
#[derive(Clone, Debug, Serialize)]
pub struct PtxCheck {
    /// The architectures compiled for, as `ptxas -arch` names them.
    pub architectures: Vec<String>,
    /// The PTX version emitted for each (`ptx90` for 9.0; `None`: LLVM's default).
    pub ptx_versions: Vec<Option<String>>,
    /// Every distinct kernel the run compiled, in the order first compiled, once per
    /// architecture.
    pub kernels: Vec<KernelPtx>,
}

impl PtxCheck {
    /// The compilations (a kernel for an architecture) the compiler refused.
    pub fn failures(&self) -> impl Iterator<Item = &KernelPtx> {
        self.kernels.iter().filter(|k| k.error.is_some())
    }
}

struct Observed {
    out: PathBuf,
    targets: Vec<NvidiaTarget>,
    seen: HashSet<String>,
    kernels: Vec<KernelPtx>,
}

static OBSERVED: Mutex<Option<Observed>> = Mutex::new(None);

/// From now on, compile every kernel a wgpu device compiles for each of `targets` too, writing
/// its PTX into `out` (created). Once per process, before the first wgpu kernel; [`finish`] says
/// what was seen. `libdevice` (the CUDA toolkit's math library, which the compiler links into any
/// kernel calling a math function) is looked up as burn's CUDA runtime does: `CUDA_PATH`, else
/// the usual toolkit folders.
pub fn install(out: &Path, targets: &[NvidiaTarget]) -> Result<()> {
    if targets.is_empty() {
        return Err(HvqError::Config(
            "no NVIDIA architecture to compile for".into(),
        ));
    }
    super::cuda_driver::find_libdevice(std::env::var_os("CUDA_PATH").as_deref().map(Path::new))?;
    std::fs::create_dir_all(out).map_err(|e| HvqError::io(out, e))?;
    *lock() = Some(Observed {
        out: out.to_path_buf(),
        targets: targets.to_vec(),
        seen: HashSet::new(),
        kernels: Vec::new(),
    });
    if !cubecl::wgpu::set_kernel_observer(observe) {
        return Err(HvqError::Config(
            "a kernel observer was already installed in this process".into(),
        ));
    }
    Ok(())
}

/// What the kernels compiled since [`install`] gave.
pub fn finish() -> Result<PtxCheck> {
    let observed = lock()
        .take()
        .ok_or_else(|| HvqError::Config("ptx_check::install was not called".into()))?;
    Ok(PtxCheck {
        architectures: observed.targets.iter().map(|t| t.architecture()).collect(),
        ptx_versions: observed
            .targets
            .iter()
            .map(|t| PtxVersion::for_driver(t.driver_version).map(|v| v.to_string()))
            .collect(),
        kernels: observed.kernels,
    })
}

fn lock() -> std::sync::MutexGuard<'static, Option<Observed>> {
    // A panic while the lock was held (none is expected: compile panics are caught) leaves the
    // records as they were, still worth reporting.
    OBSERVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The observer: called by the wgpu server, on its thread, with each kernel it compiles.
fn observe(kernel: &dyn CubeKernel) {
    let key = {
        let mut hasher = DefaultHasher::new();
        kernel.id().hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    };
    let mut guard = lock();
    let Some(observed) = guard.as_mut() else {
        return;
    };
    if !observed.seen.insert(key.clone()) {
        return;
    }
    let name = kernel.name().to_string();
    // The kernel is defined again for each architecture: the compiler consumes its definition,
    // which cannot be copied.
    for &target in &observed.targets {
        let architecture = target.architecture();
        let mut record = KernelPtx {
            name: name.clone(),
            architecture: architecture.clone(),
            key: key.clone(),
            ptx_file: None,
            shared_memory_bytes: None,
            error: None,
        };
        match compile(kernel, target) {
            Ok((ptx, shared_memory_bytes)) => {
                let file = format!("{key}-{architecture}.ptx");
                record.shared_memory_bytes = Some(shared_memory_bytes);
                match std::fs::write(observed.out.join(&file), ptx) {
                    Ok(()) => record.ptx_file = Some(file),
                    Err(e) => record.error = Some(format!("writing {file}: {e}")),
                }
            }
            Err(error) => record.error = Some(error),
        }
        observed.kernels.push(record);
    }
}

/// `kernel` compiled to PTX as burn's CUDA runtime compiles it for `target`, and the shared
/// memory its launch reserves; the compiler's refusal or panic as text.
fn compile(
    kernel: &dyn CubeKernel,
    target: NvidiaTarget,
) -> std::result::Result<(String, usize), String> {
    if let Some(source) = kernel.source() {
        // cubecl-cuda's LLVM backend has no route for a kernel that carries its own text.
        return Err(format!(
            "a precompiled {} kernel: burn's CUDA backend (LLVM) cannot load it",
            source.lang
        ));
    }
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let definition = cubecl::define_kernel(kernel).map_err(|e| e.to_string())?;
        let mut compiler = PlironCompiler {
            target: LlvmTarget::Nvptx,
        };
        let artifact = cubecl::Compiler::compile(&mut compiler, definition, &target.options())
            .map_err(|e| e.to_string())?;
        match artifact {
            PlironArtifact::NvptxCode(module) => {
                // The module's PTX is NUL-terminated.
                let bytes: Vec<u8> = module
                    .ptx
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                Ok((
                    String::from_utf8_lossy(&bytes).into_owned(),
                    module.shared_memory_size,
                ))
            }
            _ => Err("the NVPTX compiler returned no PTX".to_string()),
        }
    }));
    match caught {
        Ok(result) => result,
        Err(payload) => Err(format!(
            "the compiler panicked: {}",
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into())
        )),
    }
}
