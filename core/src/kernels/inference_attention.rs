//! Which kernel inference's attention runs on a GPU backend, and `HVQ_GPU_ATTENTION`, which
//! picks it for a process.
//!
//! Two kernels compute it: hvq's own (`gpu_attention_split`: each query's keys shared out among
//! eight threads, keys and values staged in shared memory) and burn 0.22's flash-attention
//! "unit" kernel (`gpu_attention`). Which is faster depends on the device: on an H200 burn's
//! took 6.2 ms for the decoder's eight attentions at batch 8 (2026-12-04, wgpu; PyTorch's 0.31
//! ms), which hvq's was written to beat, and on lavapipe (a CPU driver) hvq's is the slower, the
//! official model end to end at batch 3 6345 against 4312 ms (2026-12-05). So by default
//! (`auto`, what the CLI and the desktop inspector run when the variable is unset) the device
//! decides, each kind of attention timed on both once (`attention_choice`); `split` and `flash`
//! force one, as `scripts/gpu-bench.sh --attention-ab` does. A program that never reads the
//! variable (the library's tests, the web page, whose WebGPU cannot wait for the device to time
//! anything) runs `split`. Read once, at start-up ([`apply_variable`], the CLI's first step).

use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The environment variable that picks the kernel.
pub const VARIABLE: &str = "HVQ_GPU_ATTENTION";

/// The kernels, by the names the variable takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InferenceAttention {
    /// hvq's kernel, the keys of a query split across threads (the library's default).
    Split,
    /// burn's flash-attention unit kernel.
    Flash,
    /// Whichever of the two the device timed faster for each kind of attention
    /// (`attention_choice`); the variable's default.
    Auto,
}

impl InferenceAttention {
    /// Every choice, the library's default first.
    pub const ALL: [InferenceAttention; 3] = [
        InferenceAttention::Split,
        InferenceAttention::Flash,
        InferenceAttention::Auto,
    ];

    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            InferenceAttention::Split => "split",
            InferenceAttention::Flash => "flash",
            InferenceAttention::Auto => "auto",
        }
    }

    /// The kernel named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(VARIABLE, name, &Self::ALL, Self::name)
    }
}

/// The process's choice, as its index in [`InferenceAttention::ALL`].
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Read `HVQ_GPU_ATTENTION` (unset: auto) and set the kernel for this process: a typo is an
/// error rather than a silent measurement of the default.
pub fn apply_variable() -> Result<InferenceAttention> {
    let kernel = crate::env_setting::read(
        VARIABLE,
        InferenceAttention::Auto,
        InferenceAttention::parse,
    )?;
    set(kernel);
    Ok(kernel)
}

/// Set the kernel for the attentions launched afterwards.
pub fn set(kernel: InferenceAttention) {
    let index = InferenceAttention::ALL
        .iter()
        .position(|k| *k == kernel)
        .unwrap_or(0);
    CHOICE.store(index as u8, Ordering::Relaxed);
}

/// The kernel in use now.
pub fn current() -> InferenceAttention {
    InferenceAttention::ALL
        .get(CHOICE.load(Ordering::Relaxed) as usize)
        .copied()
        .unwrap_or(InferenceAttention::Split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_typo_is_refused_naming_the_variable() {
        for kernel in InferenceAttention::ALL {
            assert_eq!(InferenceAttention::parse(kernel.name()).unwrap(), kernel);
            let json = serde_json::to_string(&kernel).unwrap();
            assert_eq!(json, format!("\"{}\"", kernel.name()));
        }
        assert_eq!(
            InferenceAttention::parse(" Flash ").unwrap(),
            InferenceAttention::Flash
        );
        let err = InferenceAttention::parse("fast").unwrap_err().to_string();
        assert!(err.contains(VARIABLE) && err.contains("fast"), "{err}");
        assert_eq!(
            current(),
            InferenceAttention::Split,
            "the library's default"
        );
    }
}
