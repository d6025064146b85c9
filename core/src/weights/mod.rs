//! Weight I/O: every tensor that enters or leaves a model goes through [`TensorMap`].
//!
//! Our module fields mirror the official parameter names (`encoder.layers.0.self_attn.in_proj_weight`,
//! `_blocks.6._depthwise_conv.weight`, …), so loading is a walk over the module tree that looks each
//! parameter up by its path; no renaming table is needed. Foreign files (an official HVQ-Trans
//! checkpoint, lukemelas EfficientNet `.pth` files, safetensors) are read into a `TensorMap` first,
//! which is where prefixes such as `module.` or `state_dict.` are dropped.
//!
//! One file per format or concern: [`HostTensor`] (`host.rs`), safetensors (`safetensors_io.rs`),
//! PyTorch `.pth` (`pth_io.rs`), element types (`dtype.rs`), and the walk over a module's parameters
//! (`module_io.rs`). Device read-back lives in [`crate::device`], atomic file writes in
//! [`crate::fs`].

mod derived;
mod dtype;
mod host;
mod module_io;
mod pth_io;
mod safetensors_io;

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{HvqError, Result};

pub use derived::DerivedCache;
pub use host::HostTensor;

/// Named tensors from one source (a file, or a module), with the source's name kept for errors.
#[derive(Clone, Debug, Default)]
pub struct TensorMap {
    source: String,
    tensors: BTreeMap<String, HostTensor>,
}

impl TensorMap {
    /// An empty map whose errors will mention `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            tensors: BTreeMap::new(),
        }
    }

    /// The name used in error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the map holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// All names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Look a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Look a tensor up, with an error naming it when absent.
    pub fn require(&self, name: &str) -> Result<&HostTensor> {
        self.tensors.get(name).ok_or_else(|| self.missing(name))
    }

    /// Look a tensor up and check its shape.
    pub fn require_shape(&self, name: &str, expected: &[usize]) -> Result<&HostTensor> {
        let t = self.require(name)?;
        if t.shape != expected {
            return Err(HvqError::ShapeMismatch {
                source_name: self.source.clone(),
                tensor: name.to_string(),
                found: t.shape.clone(),
                expected: expected.to_vec(),
            });
        }
        Ok(t)
    }

    /// Insert (or replace) a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// Keep only the tensors whose name satisfies `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.tensors.retain(|name, _| keep(name));
    }

    /// Keep only the tensors under `prefix` (e.g. `"enc."`), with the prefix removed.
    pub fn sub(&self, prefix: &str) -> TensorMap {
        TensorMap {
            source: self.source.clone(),
            tensors: self
                .tensors
                .iter()
                .filter_map(|(k, v)| k.strip_prefix(prefix).map(|k| (k.to_string(), v.clone())))
                .collect(),
        }
    }

    /// Add every tensor of `other` under `prefix`.
    pub fn extend_prefixed(&mut self, prefix: &str, other: TensorMap) {
        for (k, v) in other.tensors {
            self.tensors.insert(format!("{prefix}{k}"), v);
        }
    }

    /// Drop the wrappers a PyTorch training script adds around a state dict: a `state_dict.` or
    /// `model.` container and the `module.` prefix of `DataParallel`/`DistributedDataParallel`.
    pub fn without_wrappers(self) -> TensorMap {
        let mut tensors = self.tensors;
        for wrapper in ["state_dict.", "model_state_dict.", "model.", "module."] {
            if !tensors.is_empty() && tensors.keys().all(|k| k.starts_with(wrapper)) {
                tensors = tensors
                    .into_iter()
                    .map(|(k, v)| (k[wrapper.len()..].to_string(), v))
                    .collect();
            } else if tensors.keys().any(|k| k.starts_with(wrapper)) && wrapper != "model." {
                // A checkpoint that also stores optimiser state: keep only the wrapped entries.
                let wrapped: BTreeMap<_, _> = tensors
                    .iter()
                    .filter_map(|(k, v)| {
                        k.strip_prefix(wrapper).map(|s| (s.to_string(), v.clone()))
                    })
                    .collect();
                if wrapper == "state_dict." || wrapper == "model_state_dict." {
                    tensors = wrapped;
                } else {
                    tensors.extend(wrapped);
                }
            }
        }
        TensorMap {
            source: self.source,
            tensors,
        }
    }

    fn missing(&self, name: &str) -> HvqError {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let stem = name.split('.').next().unwrap_or(name);
        let close: Vec<&str> = self
            .names()
            .filter(|n| n.ends_with(leaf) && n.starts_with(stem))
            .take(3)
            .collect();
        let hint = if self.tensors.is_empty() {
            " (the file holds no tensor)".to_string()
        } else if close.is_empty() {
            format!(" ({} tensors present, none similar)", self.tensors.len())
        } else {
            format!(" (similar names present: {})", close.join(", "))
        };
        HvqError::MissingTensor {
            source_name: self.source.clone(),
            tensor: name.to_string(),
            hint,
        }
    }

    /// Read a weights file, detecting its format: safetensors, PyTorch zip (`torch.save` ≥ 1.6)
    /// or legacy PyTorch pickle. Non-float entries (e.g. `num_batches_tracked`) are skipped.
    pub fn read(path: impl AsRef<Path>) -> Result<TensorMap> {
        let path = path.as_ref();
        let mut head = [0u8; 16];
        let n = {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| HvqError::io(path, e))?;
            f.read(&mut head).map_err(|e| HvqError::io(path, e))?
        };
        let head = &head[..n];
        if head.len() >= 9 && head[8] == b'{' {
            let bytes = std::fs::read(path).map_err(|e| HvqError::io(path, e))?;
            Self::from_safetensors(&bytes, &path.display().to_string())
        } else {
            Self::read_pytorch(path)
        }
    }
}
