//! PyTorch `.pth` files (zip since `torch.save` 1.6, or legacy pickle), read through burn's
//! pickle reader, which interprets the pickle as data: it imports and runs nothing.

use std::path::Path;

use super::dtype::{Element, to_f32};
use super::{HostTensor, TensorMap};
use crate::error::{HvqError, Result};

impl TensorMap {
    pub(super) fn read_pytorch(path: &Path) -> Result<TensorMap> {
        use burn::store::pytorch_reader::{DType, PytorchReader};
        let reader = PytorchReader::new(path).map_err(|e| HvqError::WeightsFormat {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let source = path.display().to_string();
        let mut map = TensorMap::new(&source);
        for (name, t) in reader.into_tensors() {
            let shape = t.shape().to_vec();
            let dtype = t.dtype();
            if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
                continue;
            }
            let raw = t.read().map_err(|e| HvqError::WeightsFormat {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            })?;
            let element = match dtype {
                DType::F32 => Element::F32,
                DType::F64 => Element::F64,
                DType::F16 => Element::F16,
                _ => Element::BF16,
            };
            let data = to_f32(&raw, element);
            if data.len() != shape.iter().product::<usize>() {
                return Err(HvqError::BadTensor {
                    source_name: source,
                    tensor: name,
                    reason: format!("{} values for shape {shape:?}", data.len()),
                });
            }
            map.insert(name, HostTensor::new(shape, data));
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy `.pth` whose pickle, loaded by Python, would call `os.system` (GLOBAL + REDUCE):
    /// the reader is Rust and imports nothing, so it must refuse the file (or read it as data)
    /// without the command ever running, and without a panic.
    #[test]
    fn a_pickle_that_would_run_code_is_refused_without_running_it() {
        let dir = std::env::temp_dir().join(format!("hvq-pickle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("pwned");
        let command = format!("touch {}", marker.display());
        // Protocol 2: PROTO 2, GLOBAL 'posix system', a string argument, TUPLE1, REDUCE, STOP.
        let mut pickle = b"\x80\x02cposix\nsystem\nq\x00X".to_vec();
        pickle.extend((command.len() as u32).to_le_bytes());
        pickle.extend(command.as_bytes());
        pickle.extend(b"q\x01\x85q\x02Rq\x03.");
        for (name, bytes) in [("evil.pth", pickle.clone()), ("evil.bin", pickle)] {
            let path = dir.join(name);
            std::fs::write(&path, &bytes).unwrap();
            let outcome = std::panic::catch_unwind(|| TensorMap::read(&path));
            let result = outcome.unwrap_or_else(|_| panic!("{name}: the reader panicked"));
            match result {
                Err(e) => assert!(e.to_string().contains(name), "{e}"),
                Ok(map) => assert!(map.is_empty(), "{name}: tensors from a code pickle"),
            }
            assert!(!marker.exists(), "{name}: the pickle's command ran");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
