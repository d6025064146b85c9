//! Training: the objective, the optimiser (AdamW + global gradient-norm clipping), the schedule,
//! checkpoints and the loop.

mod adamw;
pub mod checkpoint;
mod data_parallel;
mod objective;
mod schedule;
mod trainer;

pub use crate::device::shard_sizes;
pub use adamw::{AdamW, AdamWConfig, StepReport};
pub use objective::{LossTerms, cross_entropy, objective, official_loss};
pub use schedule::{TrainConfig, epoch_order};
pub use trainer::{EpochReport, TrainEvent, Trainer, TrainingData};
