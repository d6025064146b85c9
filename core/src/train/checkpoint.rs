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
    let state = state_from(meta.metadata().as_ref(), path)?;
    let all = TensorMap::from_safetensors(&bytes, &source)?;
    let optimizer = all.sub("optim.");
    let mut network = all;
    network.retain(|n| !n.starts_with("optim."));
    Ok((network, optimizer, state))
}

/// The run state alone, from the file's header (the tensors are not read): where a run stands
/// without loading megabytes of weights and moments.
pub fn read_state(path: &Path) -> Result<RunState> {
    use std::io::Read;
    let bad = |reason: String| HvqError::WeightsFormat {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(|e| HvqError::io(path, e))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length)
        .map_err(|e| bad(format!("no safetensors header length: {e}")))?;
    // safetensors' own cap on the header (100 MB): a larger length is a damaged file.
    let length = u64::from_le_bytes(length);
    if length > 100_000_000 {
        return Err(bad(format!(
            "header length {length} bytes: not a safetensors file"
        )));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header)
        .map_err(|e| bad(format!("header cut short: {e}")))?;
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__")]
        metadata: Option<std::collections::HashMap<String, String>>,
    }
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    state_from(header.metadata.as_ref(), path)
}

/// The run state in a checkpoint's metadata.
fn state_from(
    metadata: Option<&std::collections::HashMap<String, String>>,
    path: &Path,
) -> Result<RunState> {
    let state_json = metadata
        .and_then(|m| m.get("hvq_run_state"))
        .ok_or_else(|| HvqError::WeightsFormat {
            path: path.to_path_buf(),
            reason: "no run state in the metadata: not an hvq training checkpoint".into(),
        })?;
    serde_json::from_str(state_json).map_err(|e| HvqError::WeightsFormat {
        path: path.to_path_buf(),
        reason: format!("run state: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackboneConfig, HvqConfig};
    use crate::weights::HostTensor;

    #[test]
    fn the_state_reads_from_the_header_as_load_reads_it() {
        let dir = std::env::temp_dir().join(format!("hvq-ckpt-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CHECKPOINT_FILE);
        let backbone = BackboneConfig::efficientnet_lite0();
        let hvq = HvqConfig::paper(backbone.feature_channels(), vec!["a".into()]);
        let state = RunState {
            epochs_done: 7,
            steps: 70,
            model: ModelConfig { backbone, hvq },
            train: TrainConfig::official().with_epochs(12),
            dataset: "folder:parts".into(),
        };
        let mut network = TensorMap::new("test");
        network.insert("w", HostTensor::new(vec![2, 3], vec![1.0; 6]));
        let mut optimizer = TensorMap::new("test");
        optimizer.insert("m.w", HostTensor::new(vec![2, 3], vec![0.5; 6]));
        save(&path, &network, &optimizer, &state).unwrap();
        assert_eq!(read_state(&path).unwrap(), state);
        assert_eq!(load(&path).unwrap().2, state);

        // A file cut inside its header names itself and what is wrong.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..40]).unwrap();
        let message = read_state(&path).unwrap_err().to_string();
        assert!(
            message.contains(CHECKPOINT_FILE) && message.contains("header"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
