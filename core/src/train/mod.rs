//! Training: the objective, the optimiser (AdamW + global gradient-norm clipping) and one step.

mod adamw;
mod objective;

pub use adamw::{AdamW, AdamWConfig};
pub use objective::{LossTerms, official_loss};
