//! How training computes attention on a GPU backend, and `HVQ_TRAIN_ATTENTION`, which picks it
//! for a process.
//!
//! By default a training attention on a GPU is one autodiff operation with its packed input
//! projection (`gpu_attention_autodiff`: about 22 launches per attention and step where burn's
//! composed form takes about 70). Its three kernels are one thread per query or key row, whose
//! speed against the composed form's tiled products on an NVIDIA GPU is for the device to say:
//! `HVQ_TRAIN_ATTENTION=composed` runs the composed form in the same binary, so
//! `scripts/gpu-bench.sh --train-attention-ab` times both. Read once, at start-up
//! ([`apply_variable`], the CLI's first step).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;

/// The environment variable that picks the form.
pub const VARIABLE: &str = "HVQ_TRAIN_ATTENTION";

/// The forms, by the names the variable takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainAttention {
    /// One autodiff operation (the default).
    Fused,
    /// burn's operations, as at inference on the CPU's fallback.
    Composed,
}

impl TrainAttention {
    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            TrainAttention::Fused => "fused",
            TrainAttention::Composed => "composed",
        }
    }

    /// The form named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(
            VARIABLE,
            name,
            &[TrainAttention::Fused, TrainAttention::Composed],
            Self::name,
        )
    }
}

static COMPOSED: AtomicBool = AtomicBool::new(false);

/// Read `HVQ_TRAIN_ATTENTION` (unset: fused) and set the form for this process: a typo is an
/// error rather than a silent measurement of the default.
pub fn apply_variable() -> Result<TrainAttention> {
    let form = crate::env_setting::read(VARIABLE, TrainAttention::Fused, TrainAttention::parse)?;
    COMPOSED.store(form == TrainAttention::Composed, Ordering::Relaxed);
    Ok(form)
}

/// The form in use now.
pub fn current() -> TrainAttention {
    if COMPOSED.load(Ordering::Relaxed) {
        TrainAttention::Composed
    } else {
        TrainAttention::Fused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_typo_is_refused_naming_the_variable() {
        for form in [TrainAttention::Fused, TrainAttention::Composed] {
            assert_eq!(TrainAttention::parse(form.name()).unwrap(), form);
        }
        assert_eq!(
            TrainAttention::parse(" Composed ").unwrap(),
            TrainAttention::Composed
        );
        let err = TrainAttention::parse("fast").unwrap_err().to_string();
        assert!(err.contains(VARIABLE) && err.contains("fast"), "{err}");
        assert_eq!(current(), TrainAttention::Fused, "the default");
    }
}
