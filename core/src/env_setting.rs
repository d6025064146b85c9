//! Process-wide choices read from environment variables at start-up (`HVQ_GPU_MATMUL`,
//! `HVQ_TRAIN_ATTENTION`, `HVQ_CPU_ISA`): unset means the default, a value the variable does not
//! take is an error naming it, so a typo never silently measures the default.

use crate::error::{HvqError, Result};

/// `variable`'s value through `parse`, or `unset` when the variable is not set; a value that is
/// not Unicode is an error naming the variable.
pub fn read<T>(variable: &str, unset: T, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    match std::env::var(variable) {
        Err(std::env::VarError::NotPresent) => Ok(unset),
        Ok(v) => parse(&v),
        Err(e) => Err(HvqError::Config(format!("{variable}: {e}"))),
    }
}
