//! The CPU instruction sets the CPU backend runs, and the `HVQ_CPU_ISA` cap.
//!
//! The matrix products (`gemm`), burn-flex's other SIMD kernels (`macerator`) and hvq's own
//! (`crate::kernels`) each pick the widest instruction set the CPU has, at run time. Setting
//! `HVQ_CPU_ISA=avx2` makes all three pick what they pick on a CPU without AVX-512 (the two
//! dependencies through the patched copies in `vendor/`), so one binary on an AVX-512 machine
//! measures both kinds of CPU; `native` (or unset) leaves the choice to the CPU. The variable is
//! read once, at the first kernel choice: set it before the process starts.

use serde::{Deserialize, Serialize};

use crate::error::{HvqError, Result};

/// The environment variable that caps the instruction set.
pub const VARIABLE: &str = "HVQ_CPU_ISA";

/// Check `HVQ_CPU_ISA` (the CLI does at start-up): unset, `native` or `avx2`. A typo must not
/// silently measure the wrong instruction set.
pub fn check_variable() -> Result<()> {
    crate::env_setting::read(VARIABLE, (), |v| {
        if v.eq_ignore_ascii_case("native") || v.eq_ignore_ascii_case("avx2") {
            Ok(())
        } else {
            Err(HvqError::Config(format!(
                "{VARIABLE}={v}: expected `avx2` (run as on a CPU without AVX-512) or `native`"
            )))
        }
    })
}

/// Whether AVX-512 kernels may be chosen: false under `HVQ_CPU_ISA=avx2` (the same test as the
/// patched `gemm-common` and `macerator` make).
pub fn avx512_allowed() -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ALLOWED.get_or_init(|| !std::env::var(VARIABLE).is_ok_and(|v| v.eq_ignore_ascii_case("avx2")))
}

/// The CPU's model and vector instruction sets, and which the kernels use under the cap: what a
/// CPU benchmark figure ran on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CpuIsa {
    /// `model name` from /proc/cpuinfo.
    pub model: String,
    /// The CPU's vector flags (from /proc/cpuinfo, as `lscpu` lists them): sse4_2, avx, avx2,
    /// fma, avx512*, amx*.
    pub flags: Vec<String>,
    /// The cap asked for (`HVQ_CPU_ISA`), if any.
    pub cap: Option<String>,
    /// The widest instruction set hvq's own kernels choose: `avx512`, `avx2` or `older`.
    pub in_use: String,
    /// The micro-kernels every matrix product runs (`gemm`): `avx512f`, `fma` (AVX2) or `scalar`.
    pub gemm: String,
    /// The SIMD level of burn-flex's other kernels (`macerator`): `V4` (AVX-512), `V3` (AVX2), …
    pub flex_simd: String,
}

impl CpuIsa {
    /// This machine, now.
    pub fn detect() -> Self {
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let flags = field("flags")
            .unwrap_or_default()
            .split_whitespace()
            .filter(|f| is_vector_flag(f))
            .map(str::to_string)
            .collect();
        Self {
            model: field("model name").unwrap_or_else(|| "unknown CPU".into()),
            flags,
            cap: std::env::var(VARIABLE).ok(),
            in_use: in_use().to_string(),
            gemm: gemm_kernels().to_string(),
            flex_simd: flex_simd_level(),
        }
    }

    /// One line for the device line: what the CPU kernels run, and the cap if any.
    pub fn summary(&self) -> String {
        let cap = match &self.cap {
            Some(c) => format!(", {VARIABLE}={c}"),
            None => String::new(),
        };
        format!(
            "CPU kernels: {} (gemm {}, burn-flex SIMD {}{cap})",
            self.in_use, self.gemm, self.flex_simd
        )
    }
}

/// The SIMD level burn-flex's kernels dispatch to here (macerator's `Arch`, patched for the cap).
fn flex_simd_level() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        format!("{:?}", macerator::Arch::detect())
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH.to_string()
    }
}

/// The micro-kernels `gemm` chooses here: the test its `init_gemm_fn` makes (AVX-512 with the
/// `x86-v4` feature hvq enables, else FMA), through the patched `feature_detected!`.
fn gemm_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if gemm_common::feature_detected!("avx512f") {
            "avx512f"
        } else if gemm_common::feature_detected!("fma") {
            "fma"
        } else {
            "scalar"
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}

fn is_vector_flag(flag: &str) -> bool {
    ["sse4_2", "avx", "avx2", "fma", "f16c"].contains(&flag)
        || flag.starts_with("avx512")
        || flag.starts_with("amx")
        || flag.starts_with("avx_vnni")
}

/// The widest instruction set the kernels choose here, under the cap.
pub fn in_use() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_allowed() && std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2";
        }
        "older"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        std::env::consts::ARCH
    }
}
