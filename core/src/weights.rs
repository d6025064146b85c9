//! Weight I/O: every tensor that enters or leaves a model goes through [`TensorMap`].
//!
//! Our module fields mirror the official parameter names (`encoder.layers.0.self_attn.in_proj_weight`,
//! `_blocks.6._depthwise_conv.weight`, …), so loading is a walk over the module tree that looks each
//! parameter up by its path; no renaming table is needed. Foreign files (an official HVQ-Trans
//! checkpoint, lukemelas EfficientNet `.pth` files, safetensors) are read into a `TensorMap` first,
//! which is where prefixes such as `module.` or `state_dict.` are dropped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{HvqError, Result};

/// A tensor held in host memory as f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl HostTensor {
    /// Build from shape and data; the length must match the shape.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    /// Copy a device tensor to the host.
    pub fn from_tensor<const D: usize>(tensor: &Tensor<D>) -> Self {
        let data = tensor.to_data();
        Self {
            shape: data.shape().to_vec(),
            data: data
                .try_into_vec_as::<f32>()
                .expect("float tensors convert to f32"),
        }
    }

    /// Upload to a device as a rank-`D` tensor (the rank must match).
    pub fn to_tensor<const D: usize>(&self, device: &Device) -> Tensor<D> {
        assert_eq!(self.shape.len(), D, "rank mismatch uploading a host tensor");
        Tensor::from_data(
            TensorData::new(self.data.clone(), self.shape.clone()),
            device,
        )
    }
}

/// Read a device tensor back to the host as f32 values (row-major), with a device error rather
/// than a panic when the backend fails.
pub fn read_back<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    // The async read-back run to completion, as burn's own `into_data` does.
    burn::tensor::try_read_sync(read_back_async(tensor)).unwrap_or_else(|| {
        Err(HvqError::Device(
            "this backend cannot read results synchronously here: use read_back_async".into(),
        ))
    })
}

/// [`read_back`] for backends that cannot block (WebGPU in the browser); the same values.
pub async fn read_back_async<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .into_data_async()
        .await
        .map_err(|e| HvqError::Device(format!("reading results back: {e:?}")))?
        .try_into_vec_as::<f32>()
        .map_err(|e| HvqError::Device(format!("reading results back: {e:?}")))
}

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

    // ---------------------------------------------------------------- reading

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
            let data = match view.dtype() {
                Dtype::F32 => bytes_to_f32(raw, 4, |b| f32::from_le_bytes(b.try_into().unwrap())),
                Dtype::F64 => {
                    bytes_to_f32(raw, 8, |b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                }
                Dtype::F16 => bytes_to_f32(raw, 2, |b| {
                    f16_to_f32(u16::from_le_bytes(b.try_into().unwrap()))
                }),
                Dtype::BF16 => bytes_to_f32(raw, 2, |b| {
                    f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16)
                }),
                _ => continue,
            };
            map.insert(name, HostTensor::new(view.shape().to_vec(), data));
        }
        Ok(map)
    }

    fn read_pytorch(path: &Path) -> Result<TensorMap> {
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
            let data = match dtype {
                DType::F32 => bytes_to_f32(&raw, 4, |b| f32::from_le_bytes(b.try_into().unwrap())),
                DType::F64 => bytes_to_f32(&raw, 8, |b| {
                    f64::from_le_bytes(b.try_into().unwrap()) as f32
                }),
                DType::F16 => bytes_to_f32(&raw, 2, |b| {
                    f16_to_f32(u16::from_le_bytes(b.try_into().unwrap()))
                }),
                _ => bytes_to_f32(&raw, 2, |b| {
                    f32::from_bits((u16::from_le_bytes(b.try_into().unwrap()) as u32) << 16)
                }),
            };
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

    // ---------------------------------------------------------------- writing

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

    // ---------------------------------------------------------------- modules

    /// Replace every float parameter of `module` by the tensor of the same path in this map,
    /// checking shapes. Missing tensors and shape mismatches are reported by name.
    pub fn load_into<M: Module>(&self, module: M) -> Result<M> {
        let mut loader = Loader {
            map: self,
            path: Vec::new(),
            error: None,
        };
        let module = module.map(&mut loader);
        match loader.error {
            Some(e) => Err(e),
            None => Ok(module),
        }
    }

    /// Collect every float parameter of `module` under its path.
    pub fn from_module<M: Module>(module: &M, source: &str) -> TensorMap {
        let mut collector = Collector {
            map: TensorMap::new(source),
            path: Vec::new(),
        };
        module.visit(&mut collector);
        collector.map
    }
}

/// Write bytes to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |file, bytes| file.write_all(bytes))
}

/// [`write_atomic`] with the write step given (tests make it fail half-way, as a full disk does).
/// Whatever fails, the file at `path` is the old one or the new one, never a mix, and the
/// temporary file does not stay behind to fill the disk further.
fn write_atomic_with(
    path: &Path,
    bytes: &[u8],
    write: impl FnOnce(&mut std::fs::File, &[u8]) -> std::io::Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| HvqError::io(dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "weights".into());
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        write(&mut f, bytes)?;
        f.sync_all()
    });
    let result = written
        .map_err(|e| HvqError::io(&tmp, e))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| HvqError::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn bytes_to_f32(raw: &[u8], width: usize, f: impl Fn(&[u8]) -> f32) -> Vec<f32> {
    raw.chunks_exact(width).map(f).collect()
}

/// IEEE half → single conversion (no dependency needed for this one function).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

struct Loader<'a> {
    map: &'a TensorMap,
    path: Vec<String>,
    error: Option<HvqError>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = self.path.join(".");
        let expected = param.val().dims().to_vec();
        let host = match self.map.require_shape(&name, &expected) {
            Ok(t) => t,
            Err(e) => {
                self.error = Some(e);
                return param;
            }
        };
        if let Some(i) = host.data.iter().position(|v| !v.is_finite()) {
            self.error = Some(HvqError::BadTensor {
                source_name: self.map.source.clone(),
                tensor: name,
                reason: format!("non-finite value {} at flat index {i}", host.data[i]),
            });
            return param;
        }
        param.map(|old| {
            let tensor: Tensor<D> = host.to_tensor(&old.device());
            if old.is_require_grad() {
                tensor.require_grad()
            } else {
                tensor
            }
        })
    }
}

struct Collector {
    map: TensorMap,
    path: Vec<String>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.map
            .insert(self.path.join("."), HostTensor::from_tensor(&param.val()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
mod pickle_tests {
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
