//! Training checkpoints: one safetensors file holding the network (official names, codebooks
//! included), the optimiser moments (`optim.` prefix) and, in its metadata, the configs and the
//! position in the run. Written atomically, so a killed run never leaves a half-written file.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::schedule::TrainConfig;
use crate::config::ModelConfig;
use crate::error::{HvqError, Result};
use crate::weights::TensorMap;

/// File name of the checkpoint inside the output directory.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";

/// Where a run stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub steps: u64,
    /// The model's architecture.
    pub model: ModelConfig,
    /// The schedule.
    pub train: TrainConfig,
    /// Dataset the run trains on (as given on the command line).
    pub dataset: String,
}

/// Write network + optimiser + state.
pub fn save(
    path: &Path,
    network: &TensorMap,
    optimizer: &TensorMap,
    state: &RunState,
) -> Result<()> {
    let mut all = network.clone();
    all.extend_prefixed("optim.", optimizer.clone());
    let mut meta = BTreeMap::new();
    meta.insert(
        "hvq_run_state".to_string(),
        serde_json::to_string(state).expect("state serialises"),
    );
    all.save(path, &meta)
}

/// Read a checkpoint: (network tensors, optimiser tensors, state).
pub fn load(path: &Path) -> Result<(TensorMap, TensorMap, RunState)> {
    let bytes = std::fs::read(path).map_err(|e| HvqError::io(path, e))?;
    let source = path.display().to_string();
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| HvqError::WeightsFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let state_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("hvq_run_state"))
        .ok_or_else(|| HvqError::WeightsFormat {
            path: path.to_path_buf(),
            reason: "no run state in the metadata: not an hvq training checkpoint".into(),
        })?;
    let state: RunState =
        serde_json::from_str(state_json).map_err(|e| HvqError::WeightsFormat {
            path: path.to_path_buf(),
            reason: format!("run state: {e}"),
        })?;
    let all = TensorMap::from_safetensors(&bytes, &source)?;
    let optimizer = all.sub("optim.");
    let mut network = all;
    network.retain(|n| !n.starts_with("optim."));
    Ok((network, optimizer, state))
}
