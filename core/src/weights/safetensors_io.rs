//! The safetensors format: our model files, checkpoints and feature caches, and the embedded
//! weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::dtype::{Element, to_f32};
use super::{HostTensor, TensorMap};
use crate::error::{HvqError, Result};
use crate::fs::write_atomic;

impl TensorMap {
    /// Parse safetensors bytes (as embedded in the binary or read from disk).
    pub fn from_safetensors(bytes: &[u8], source: &str) -> Result<TensorMap> {
        let st =
            safetensors::SafeTensors::deserialize(bytes).map_err(|e| HvqError::WeightsFormat {
                path: PathBuf::from(source),
                reason: format!("safetensors: {e}"),
            })?;
        let mut map = TensorMap::new(source);
        for (name, view) in st.tensors() {
            use safetensors::Dtype;
            let raw = view.data();
            let element = match view.dtype() {
                Dtype::F32 => Element::F32,
                Dtype::F64 => Element::F64,
                Dtype::F16 => Element::F16,
                Dtype::BF16 => Element::BF16,
                _ => continue,
            };
            let data = to_f32(raw, element);
            map.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        Ok(map)
    }

    /// Serialise to safetensors bytes, with string metadata (e.g. the config as JSON).
    pub fn to_safetensors(&self, metadata: &BTreeMap<String, String>) -> Vec<u8> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(k, v)| {
                let mut b = Vec::with_capacity(v.data.len() * 4);
                for x in &v.data {
                    b.extend_from_slice(&x.to_le_bytes());
                }
                (k.clone(), b, v.shape.clone())
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(k, b, s)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .expect("length matches shape by construction"),
                )
            })
            .collect();
        let meta: std::collections::HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        safetensors::serialize(views, Some(meta)).expect("f32 tensors always serialise")
    }

    /// Write a safetensors file atomically: a temporary file beside it, fsync, then rename, so a
    /// crash never leaves a half-written file under the final name.
    pub fn save(&self, path: impl AsRef<Path>, metadata: &BTreeMap<String, String>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_safetensors(metadata))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use crate::fs::{write_atomic, write_atomic_with};
    use crate::weights::{HostTensor, TensorMap};

    /// A checkpoint rewritten on a disk that fills up half-way: the previous checkpoint stays
    /// whole and readable, and no partial temporary file is left behind.
    #[test]
    fn a_write_that_fails_half_way_leaves_the_previous_file_intact() {
        let dir = std::env::temp_dir().join(format!("hvq-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("checkpoint.safetensors");
        let mut old = TensorMap::new("old");
        old.insert("w", HostTensor::new(vec![2], vec![1.0, 2.0]));
        let old_bytes = old.to_safetensors(&BTreeMap::new());
        write_atomic(&path, &old_bytes).unwrap();

        let mut new = TensorMap::new("new");
        new.insert("w", HostTensor::new(vec![4], vec![3.0; 4]));
        let new_bytes = new.to_safetensors(&BTreeMap::new());
        let err = write_atomic_with(&path, &new_bytes, |file, bytes| {
            file.write_all(&bytes[..bytes.len() / 2])?;
            Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device",
            ))
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("No space left"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), old_bytes);
        assert_eq!(TensorMap::read(&path).unwrap().get("w"), old.get("w"));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("checkpoint.safetensors")]
        );

        // The same write without the fault replaces the file.
        write_atomic(&path, &new_bytes).unwrap();
        assert_eq!(TensorMap::read(&path).unwrap().get("w"), new.get("w"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
