//! Moving tensors between a [`TensorMap`] and a burn module's parameters, by parameter path.
//!
//! A path is the chain of field names (`_blocks.3._bn1.running_mean`). An enum module (such as
//! `Backbone`) adds its variant's name as a level of its own in burn; that level is left out, so
//! a parameter's name is the same whether the network is held directly or behind the enum.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::{HostTensor, TensorMap};
use crate::error::{HvqError, Result};

impl TensorMap {
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

/// burn names an enum's variant level with the container type `Enum:<type>`.
fn is_enum_level(container_type: &str) -> bool {
    container_type.starts_with("Enum:")
}

fn enter(path: &mut Vec<String>, name: &str, container_type: &str) {
    if !is_enum_level(container_type) {
        path.push(name.to_string());
    }
}

fn exit(path: &mut Vec<String>, container_type: &str) {
    if !is_enum_level(container_type) {
        path.pop();
    }
}

struct Loader<'a> {
    map: &'a TensorMap,
    path: Vec<String>,
    error: Option<HvqError>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        enter(&mut self.path, name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        exit(&mut self.path, container_type);
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
    fn enter_module(&mut self, name: &str, container_type: &str) {
        enter(&mut self.path, name, container_type);
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        exit(&mut self.path, container_type);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.map
            .insert(self.path.join("."), HostTensor::from_tensor(&param.val()));
    }
}
