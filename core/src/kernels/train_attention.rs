//! How training computes attention on a GPU backend, and `HVQ_TRAIN_ATTENTION`, which picks it
//! for a process.
//!
//! Two forms compute it: one autodiff operation with its packed input projection
//! (`gpu_attention_autodiff`, `fused`: about 22 launches per attention and step where burn's
//! composed form takes about 70; its kernels share each query's keys among eight threads), and
//! burn's operations (`composed`: the projections, the heads' products, softmax and dropout as
//! launches of their own). Which is faster depends on the device: on lavapipe (a CPU driver) the
//! composed form is, a training step of the official model at batch 3 8921 against 13284 ms
//! (2026-12-05), while the fused form was written for a GPU, where the one-thread-per-row kernels
//! it replaced took 11.7 ms of an H200's batch-8 step. So by default (`auto`, what the CLI and the
//! desktop inspector run when the variable is unset) the device decides, each kind of training
//! attention timed in both forms once (`train_attention_choice`); `fused` and `composed` force
//! one, as `scripts/gpu-bench.sh --train-attention-ab` does. A program that never reads the
//! variable (the library's tests) runs `fused`. Read once, at start-up ([`apply_variable`], the
//! CLI's first step).

use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// The environment variable that picks the form.
pub const VARIABLE: &str = "HVQ_TRAIN_ATTENTION";

/// The forms, by the names the variable takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainAttention {
    /// One autodiff operation (the library's default).
    Fused,
    /// burn's operations, as at inference on the CPU's fallback.
    Composed,
    /// Whichever of the two the device timed faster for each kind of training attention
    /// (`train_attention_choice`); the variable's default.
    Auto,
}

impl TrainAttention {
    /// Every choice, the library's default first.
    pub const ALL: [TrainAttention; 3] = [
        TrainAttention::Fused,
        TrainAttention::Composed,
        TrainAttention::Auto,
    ];

    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            TrainAttention::Fused => "fused",
            TrainAttention::Composed => "composed",
            TrainAttention::Auto => "auto",
        }
    }

    /// The form named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(VARIABLE, name, &Self::ALL, Self::name)
    }
}

/// The process's choice, as its index in [`TrainAttention::ALL`].
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Read `HVQ_TRAIN_ATTENTION` (unset: auto) and set the form for this process: a typo is an
/// error rather than a silent measurement of the default.
pub fn apply_variable() -> Result<TrainAttention> {
    let form = crate::env_setting::read(VARIABLE, TrainAttention::Auto, TrainAttention::parse)?;
    set(form);
    Ok(form)
}

/// Set the form for the training attentions computed afterwards.
pub fn set(form: TrainAttention) {
    let index = TrainAttention::ALL
        .iter()
        .position(|f| *f == form)
        .unwrap_or(0);
    CHOICE.store(index as u8, Ordering::Relaxed);
}

/// The form in use now.
pub fn current() -> TrainAttention {
    TrainAttention::ALL
        .get(CHOICE.load(Ordering::Relaxed) as usize)
        .copied()
        .unwrap_or(TrainAttention::Fused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_a_typo_is_refused_naming_the_variable() {
        for form in TrainAttention::ALL {
            assert_eq!(TrainAttention::parse(form.name()).unwrap(), form);
            let json = serde_json::to_string(&form).unwrap();
            assert_eq!(json, format!("\"{}\"", form.name()));
        }
        assert_eq!(
            TrainAttention::parse(" Composed ").unwrap(),
            TrainAttention::Composed
        );
        let err = TrainAttention::parse("fast").unwrap_err().to_string();
        assert!(err.contains(VARIABLE) && err.contains("fast"), "{err}");
        assert_eq!(current(), TrainAttention::Fused, "the library's default");
    }
}
