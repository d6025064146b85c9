//! Which kernel inference's attention runs on a GPU backend, and `HVQ_GPU_ATTENTION`, which
//! picks it for a process.
//!
//! By default hvq's own kernel (`gpu_attention_split`: each query's keys shared out among eight
//! threads, keys and values staged in shared memory). burn 0.22's flash-attention "unit" kernel,
//! which inference ran before, took 6.2 ms for the decoder's eight attentions at batch 8 on an
//! H200 (2026-12-04, wgpu; PyTorch's 0.31 ms): `HVQ_GPU_ATTENTION=flash` runs it in the same
//! binary, so `scripts/gpu-bench.sh --attention-ab` times both. Read once, at start-up
//! ([`apply_variable`], the CLI's first step).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;

/// The environment variable that picks the kernel.
pub const VARIABLE: &str = "HVQ_GPU_ATTENTION";

/// The kernels, by the names the variable takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InferenceAttention {
    /// hvq's kernel, the keys of a query split across threads (the default).
    Split,
    /// burn's flash-attention unit kernel.
    Flash,
}

impl InferenceAttention {
    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            InferenceAttention::Split => "split",
            InferenceAttention::Flash => "flash",
        }
    }

    /// The kernel named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(
            VARIABLE,
            name,
            &[InferenceAttention::Split, InferenceAttention::Flash],
            Self::name,
        )
    }
}

static FLASH: AtomicBool = AtomicBool::new(false);

/// Read `HVQ_GPU_ATTENTION` (unset: split) and set the kernel for this process: a typo is an
/// error rather than a silent measurement of the default.
pub fn apply_variable() -> Result<InferenceAttention> {
    let kernel = crate::env_setting::read(
        VARIABLE,
        InferenceAttention::Split,
        InferenceAttention::parse,
    )?;
    set(kernel);
    Ok(kernel)
}

/// Set the kernel for the attentions launched afterwards.
pub fn set(kernel: InferenceAttention) {
    FLASH.store(kernel == InferenceAttention::Flash, Ordering::Relaxed);
}

/// The kernel in use now.
pub fn current() -> InferenceAttention {
    if FLASH.load(Ordering::Relaxed) {
        InferenceAttention::Flash
    } else {
        InferenceAttention::Split
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_typo_is_refused_naming_the_variable() {
        for kernel in [InferenceAttention::Split, InferenceAttention::Flash] {
            assert_eq!(InferenceAttention::parse(kernel.name()).unwrap(), kernel);
        }
        assert_eq!(
            InferenceAttention::parse(" Flash ").unwrap(),
            InferenceAttention::Flash
        );
        let err = InferenceAttention::parse("fast").unwrap_err().to_string();
        assert!(err.contains(VARIABLE) && err.contains("fast"), "{err}");
        assert_eq!(current(), InferenceAttention::Split, "the default");
    }
}
