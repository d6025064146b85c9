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

/// The one of `choices` whose name (`name_of`) is `value`, ignoring case and surrounding space;
/// otherwise an error naming `variable`, the value and every name (`expected one of a, b`).
pub fn named<T: Copy>(
    variable: &str,
    value: &str,
    choices: &[T],
    name_of: impl Fn(T) -> &'static str,
) -> Result<T> {
    choices
        .iter()
        .copied()
        .find(|c| name_of(*c).eq_ignore_ascii_case(value.trim()))
        .ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|c| name_of(*c)).collect();
            HvqError::Config(format!(
                "{variable}={value}: expected one of {}",
                names.join(", ")
            ))
        })
}
