//! Moving tensors between a [`TensorMap`] and a burn module's parameters, by parameter path.

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
