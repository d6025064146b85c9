//! Several devices named in one list, for data-parallel training (`--devices`).

use burn::tensor::Device;

use super::{DeviceChoice, create};
use crate::error::{HvqError, Result};

/// Start every device of a comma-separated list: `cpu`, `wgpu`, `cuda` (the first of their
/// kind), `cuda:N` and `wgpu:N` (the N-th NVIDIA GPU, the N-th discrete GPU through wgpu), and
/// `NAME*N` (also `NAME×N`) for N replicas on one device, as `cpu*2` to try data parallelism on
/// a machine without GPUs, and `ws://HOST:PORT` (also `ws://HOST:PORT#N` for the server's N-th
/// device) for a device that `hvq device-server` hosts on another process or machine. Each
/// device is probed, as `--device` is.
pub fn create_list(spec: &str) -> Result<Vec<Device>> {
    let mut devices = Vec::new();
    for item in spec.split(',').map(str::trim) {
        let (name, copies) = match item.split_once(['*', '×']) {
            Some((name, n)) => {
                let n: usize = n.trim().parse().map_err(|_| {
                    HvqError::Device(format!(
                        "{item:?} in --devices: the count {n:?} is not a number"
                    ))
                })?;
                if n == 0 {
                    return Err(HvqError::Device(format!(
                        "{item:?} in --devices: zero copies"
                    )));
                }
                (name.trim(), n)
            }
            None => (item, 1),
        };
        let device = create_one(name)?;
        devices.extend(std::iter::repeat_n(device, copies));
    }
    if devices.is_empty() {
        return Err(HvqError::Device("--devices names no device".into()));
    }
    Ok(devices)
}

fn create_one(name: &str) -> Result<Device> {
    if name.starts_with("ws://") {
        return super::remote::connect(name);
    }
    let (kind, index) = match name.split_once(':') {
        Some((kind, index)) => {
            let index: usize = index.parse().map_err(|_| {
                HvqError::Device(format!(
                    "{name:?} in --devices: the index {index:?} is not a number"
                ))
            })?;
            (kind, Some(index))
        }
        None => (name, None),
    };
    let choice: DeviceChoice = kind.parse()?;
    match (choice, index) {
        (DeviceChoice::Auto, _) => Err(HvqError::Device(
            "--devices takes explicit devices (cpu, wgpu, cuda, cuda:N, wgpu:N), not auto".into(),
        )),
        (DeviceChoice::Cpu, Some(_)) => Err(HvqError::Device(format!(
            "{name:?} in --devices: the CPU has no index; use cpu*N for N replicas"
        ))),
        (DeviceChoice::Cuda, Some(i)) if i > 0 => indexed_cuda(i),
        (DeviceChoice::Wgpu, Some(i)) if i > 0 => indexed_wgpu(i),
        _ => create(choice),
    }
}

#[cfg(feature = "cuda")]
fn indexed_cuda(index: usize) -> Result<Device> {
    super::cuda_driver::check()?;
    let device = Device::cuda(index);
    super::probe(&device)?;
    Ok(device)
}

#[cfg(not(feature = "cuda"))]
fn indexed_cuda(_index: usize) -> Result<Device> {
    create(DeviceChoice::Cuda)
}

#[cfg(feature = "wgpu")]
fn indexed_wgpu(index: usize) -> Result<Device> {
    let device = Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index));
    super::probe(&device)?;
    Ok(device)
}

#[cfg(not(feature = "wgpu"))]
fn indexed_wgpu(_index: usize) -> Result<Device> {
    create(DeviceChoice::Wgpu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_expands_copies_and_names_what_is_wrong() {
        assert_eq!(create_list("cpu*3").unwrap().len(), 3);
        assert_eq!(create_list("cpu, cpu×2").unwrap().len(), 3);
        for (spec, says) in [
            ("cpu*x", "not a number"),
            ("cpu*0", "zero copies"),
            ("cpu:1", "no index"),
            ("auto", "not auto"),
            ("tpu", "unknown device"),
            ("cuda:one", "not a number"),
            ("ws://127.0.0.1:9#x", "not a number"),
        ] {
            let e = create_list(spec).unwrap_err().to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }
}
