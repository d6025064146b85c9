//! How a run's matrix products are computed (`--precision`), process-wide.
//!
//! burn's GPU matrix products (cubek-matmul, shared by burn's CUDA and wgpu backends) try a
//! tensor-core routine first; on an NVIDIA GPU with TF32 (Ampere, sm_80, and later) through CUDA
//! that routine takes f32 operands as TF32 (10-bit mantissas, sums in f32), so upstream burn runs
//! an f32 model's products at about 1e-3 relative precision there, and nowhere else. hvq's
//! patched copy (vendor/cubek-matmul) keeps f32 products f32 unless the run allows TF32:
//! [`Precision::F32`], the default, is the parity reference on every device; [`Precision::Tf32`]
//! is the opt-in speed mode, as PyTorch's `allow_tf32`.
//!
//! [`Precision::Bf16`] and [`Precision::F16`] run the matrix products and convolutions (the
//! backbone's, the transformer's linear layers and attention products, the VQ distances) on
//! half-precision operands, as PyTorch's autocast does: operands and results rounded to the half
//! type, everything else (norms, softmax, sums, the map) in f32 (`kernels::products`). Inference
//! only: training refuses them (f16 gradients need loss scaling, which hvq has not got).
//!
//! A setting of the process rather than of a model or device, because the kernel choice it
//! steers is: set it once at start-up, before the first product runs (kernels chosen earlier
//! are not revisited). A device server (`hvq device-server`) is its own process and takes its
//! own `--precision`.

use std::sync::atomic::{AtomicU8, Ordering};

use burn::tensor::FloatDType;

use crate::device::DeviceChoice;
use crate::error::{HvqError, Result};

/// How matrix products are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 operands and sums everywhere: the reference the golden tests hold.
    #[default]
    F32,
    /// f32 products may run on TF32 tensor cores (operands rounded to 10-bit mantissas, f32
    /// sums) where the device has them: NVIDIA sm_80 and later, through CUDA. Other devices
    /// compute in f32 as with [`Precision::F32`].
    Tf32,
    /// Products on bfloat16 operands (8-bit mantissas, f32's range); the rest f32. Inference.
    Bf16,
    /// Products on IEEE half operands (11-bit mantissas, ±65 504); the rest f32. Inference.
    F16,
}

impl Precision {
    /// Every value, in the order the CLI lists them.
    pub const ALL: [Precision; 4] = [
        Precision::F32,
        Precision::Tf32,
        Precision::Bf16,
        Precision::F16,
    ];

    /// The name the CLI takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Tf32 => "tf32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }

    /// The half type the products run in, for bf16 and f16; `None` for f32 operands.
    pub fn half_dtype(self) -> Option<FloatDType> {
        match self {
            Self::F32 | Self::Tf32 => None,
            Self::Bf16 => Some(FloatDType::BF16),
            Self::F16 => Some(FloatDType::F16),
        }
    }

    /// Whether a training run may use it (f32 and tf32; the half types are inference modes).
    pub fn trains(self) -> bool {
        self.half_dtype().is_none()
    }

    /// What this precision means on `backend`, for the device line a command prints.
    pub fn effect_on(self, backend: DeviceChoice) -> &'static str {
        match (self, backend) {
            (Self::F32, _) => "f32 products",
            (Self::Tf32, DeviceChoice::Cuda | DeviceChoice::Auto) => {
                "f32 products may use TF32 tensor cores (NVIDIA sm_80 and later: operands rounded \
                 to 10-bit mantissas, sums in f32)"
            }
            (Self::Tf32, DeviceChoice::Wgpu | DeviceChoice::Cpu) => {
                "tf32 asked, but this backend has no TF32 products: they stay f32"
            }
            (Self::Bf16 | Self::F16, DeviceChoice::Cpu) => {
                "products on half-precision operands, the rest f32; the CPU has no fast half \
                 products (slower than f32: for measuring the effect on results)"
            }
            (Self::Bf16 | Self::F16, _) => {
                "products on half-precision operands (tensor cores where the GPU has them), the \
                 rest f32"
            }
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = HvqError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                let names = Self::ALL.map(Precision::name);
                let (last, rest) = names.split_last().expect("ALL is not empty");
                HvqError::Config(format!(
                    "unknown precision {s:?}: use {} or {last}",
                    rest.join(", ")
                ))
            })
    }
}

/// The process's precision, as [`Precision::ALL`]'s index.
static CURRENT: AtomicU8 = AtomicU8::new(0);

/// Set the process's precision; takes effect for the kernels chosen afterwards.
pub fn set(precision: Precision) {
    let index = Precision::ALL
        .iter()
        .position(|p| *p == precision)
        .unwrap_or(0);
    CURRENT.store(index as u8, Ordering::Relaxed);
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    cubek_matmul::multi_level::definition::set_tf32_allowed(precision == Precision::Tf32);
}

/// The process's precision ([`set`]; [`Precision::F32`] until then).
pub fn current() -> Precision {
    Precision::ALL[CURRENT.load(Ordering::Relaxed) as usize]
}

/// Whether burn's GPU matrix products may use TF32 now: what the kernel selection reads
/// (always false in a build without a GPU backend).
pub fn tf32_allowed() -> bool {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    return cubek_matmul::multi_level::definition::tf32_allowed();
    #[cfg(not(any(feature = "wgpu", feature = "cuda")))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.name())
            );
        }
        let err = "fp16".parse::<Precision>().unwrap_err().to_string();
        assert!(
            err.contains("fp16") && err.contains("f32, tf32, bf16 or f16"),
            "{err}"
        );
        assert!(Precision::F32.trains() && Precision::Tf32.trains());
        assert!(!Precision::Bf16.trains() && !Precision::F16.trains());
    }

    /// The switch reaches the patched kernel selection, both ways. The only test that sets the
    /// process-wide value: it leaves the default behind for the others in this binary.
    #[test]
    fn setting_the_precision_reaches_the_matrix_product_kernels() {
        assert_eq!(current(), Precision::F32);
        assert!(
            !tf32_allowed(),
            "f32 is the default: no TF32 before any set"
        );
        set(Precision::Tf32);
        assert_eq!(current(), Precision::Tf32);
        assert_eq!(
            tf32_allowed(),
            cfg!(any(feature = "wgpu", feature = "cuda")),
            "tf32 allowed in the GPU kernels exactly when a GPU backend is built in"
        );
        set(Precision::F32);
        assert_eq!(current(), Precision::F32);
        assert!(!tf32_allowed());
    }
}
