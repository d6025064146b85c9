//! What CUDA needs outside the binary, checked before burn's CUDA backend is started.
//!
//! burn's CUDA runtime (cudarc) loads the driver library at run time and panics on a worker thread
//! when it is missing, which reaches the caller as an unrelated channel error; the kernel compiler
//! (cubecl-llvm) needs the toolkit's `libdevice.10.bc` for every math function and only says so
//! when the first such kernel is compiled. Both are checked here first, so a user reads which file
//! is missing and what to set instead.

use std::path::{Path, PathBuf};

use crate::error::{HvqError, Result};

/// Names the NVIDIA driver library goes by on Linux (the `.1` is what the driver package
/// installs; the bare name exists where the development symlink is installed).
pub const DRIVER_LIBRARIES: [&str; 2] = ["libcuda.so.1", "libcuda.so"];

/// Where cubecl-llvm looks for the CUDA toolkit when `CUDA_PATH` is not set, in its order.
pub const TOOLKIT_ROOTS: [&str; 4] = ["/usr/local/cuda", "/opt/cuda", "/usr/lib/cuda", "/usr"];

/// The math library inside a toolkit.
const LIBDEVICE: [&str; 3] = ["nvvm", "libdevice", "libdevice.10.bc"];

/// The driver as found: the library's name and the number of CUDA devices it reports.
#[derive(Debug, Clone)]
pub struct Driver {
    /// The library that loaded.
    pub library: String,
    /// CUDA devices the driver sees.
    pub devices: i32,
}

/// Load the driver library (the first of `names` that loads), initialise it and count its
/// devices. Errors name the libraries tried, or the driver call that failed and its code.
pub fn find_driver(names: &[&str]) -> Result<Driver> {
    imp::find_driver(names)
}

/// `libdevice.10.bc` of the toolkit `cuda_path` names, or else of the first default root that
/// has one. With `cuda_path` given, that toolkit must have it (cubecl-llvm looks nowhere else).
pub fn find_libdevice(cuda_path: Option<&Path>) -> Result<PathBuf> {
    let in_root = |root: &Path| LIBDEVICE.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    match cuda_path {
        Some(root) => {
            let file = in_root(root);
            if file.is_file() {
                Ok(file)
            } else {
                Err(HvqError::Device(format!(
                    "CUDA_PATH={} has no {}: CUDA kernels need the toolkit's libdevice for math \
                     functions; point CUDA_PATH at a CUDA toolkit (the folder holding nvvm/)",
                    root.display(),
                    file.display()
                )))
            }
        }
        None => TOOLKIT_ROOTS
            .iter()
            .map(|r| in_root(Path::new(r)))
            .find(|f| f.is_file())
            .ok_or_else(|| {
                HvqError::Device(format!(
                    "no CUDA toolkit found: CUDA kernels need nvvm/libdevice/libdevice.10.bc for \
                     math functions, looked in {}; install the CUDA toolkit or set CUDA_PATH to it",
                    TOOLKIT_ROOTS.join(", ")
                ))
            }),
    }
}

/// Both checks for the current process: the driver, then libdevice (from `CUDA_PATH`).
pub fn check() -> Result<Driver> {
    let driver = find_driver(&DRIVER_LIBRARIES)?;
    if driver.devices < 1 {
        return Err(HvqError::Device(format!(
            "the NVIDIA driver ({}) reports no CUDA device",
            driver.library
        )));
    }
    let cuda_path = std::env::var_os("CUDA_PATH").map(PathBuf::from);
    find_libdevice(cuda_path.as_deref())?;
    Ok(driver)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::{CStr, CString, c_int, c_uint, c_void};

    use super::Driver;
    use crate::error::{HvqError, Result};

    type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
    type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;

    fn symbol(lib: *mut c_void, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: `lib` is a live handle from dlopen and `name` is NUL-terminated.
        let sym = unsafe { libc::dlsym(lib, name.as_ptr()) };
        (!sym.is_null()).then_some(sym)
    }

    pub fn find_driver(names: &[&str]) -> Result<Driver> {
        for name in names {
            let Ok(c_name) = CString::new(*name) else {
                continue;
            };
            // SAFETY: dlopen with a NUL-terminated name; the handle is deliberately never closed
            // (the CUDA runtime loads the same library and keeps it for the process's life).
            let lib = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if lib.is_null() {
                continue;
            }
            let (Some(init), Some(count)) =
                (symbol(lib, c"cuInit"), symbol(lib, c"cuDeviceGetCount"))
            else {
                return Err(HvqError::Device(format!(
                    "{name} loaded but has no cuInit/cuDeviceGetCount: not an NVIDIA driver library"
                )));
            };
            // SAFETY: the symbols have these C signatures in every CUDA driver API version.
            let (init, count) = unsafe {
                (
                    std::mem::transmute::<*mut c_void, CuInit>(init),
                    std::mem::transmute::<*mut c_void, CuDeviceGetCount>(count),
                )
            };
            // SAFETY: cuInit takes flags (must be 0); cuDeviceGetCount writes one int.
            let code = unsafe { init(0) };
            if code != 0 {
                return Err(HvqError::Device(format!(
                    "the NVIDIA driver ({name}) failed to initialise: cuInit returned CUDA error \
                     {code}{}",
                    match code {
                        100 => " (no CUDA-capable device)",
                        35 => " (the driver is older than the CUDA runtime needs)",
                        999 => " (unknown error; is the kernel module loaded?)",
                        _ => "",
                    }
                )));
            }
            let mut devices: c_int = 0;
            // SAFETY: as above.
            let code = unsafe { count(&mut devices) };
            if code != 0 {
                return Err(HvqError::Device(format!(
                    "the NVIDIA driver ({name}): cuDeviceGetCount returned CUDA error {code}"
                )));
            }
            return Ok(Driver {
                library: name.to_string(),
                devices,
            });
        }
        Err(HvqError::Device(format!(
            "no NVIDIA driver: could not load {} (the CUDA driver library is installed with the \
             NVIDIA driver; if it is elsewhere, add its folder to LD_LIBRARY_PATH)",
            names.join(" or ")
        )))
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::Driver;
    use crate::error::Result;

    /// Not checked on other systems: the CUDA backend reports what it cannot load itself.
    pub fn find_driver(names: &[&str]) -> Result<Driver> {
        Ok(Driver {
            library: names.first().unwrap_or(&"the CUDA driver").to_string(),
            devices: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_missing_driver_library_is_named_in_the_error() {
        let err = find_driver(&["libhvq-no-such-driver.so.1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("libhvq-no-such-driver.so.1"), "{err}");
        assert!(err.contains("LD_LIBRARY_PATH"), "{err}");
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_library_without_the_driver_api_is_refused() {
        // libm is on every glibc system and has no cuInit.
        let err = find_driver(&["libm.so.6"]).unwrap_err().to_string();
        assert!(err.contains("not an NVIDIA driver library"), "{err}");
    }

    #[test]
    fn libdevice_is_found_under_cuda_path_or_the_error_names_cuda_path() {
        let root = std::env::temp_dir().join(format!("hvq-toolkit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let err = find_libdevice(Some(&root)).unwrap_err().to_string();
        assert!(err.contains("CUDA_PATH="), "{err}");
        assert!(err.contains("libdevice.10.bc"), "{err}");

        let dir = root.join("nvvm").join("libdevice");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("libdevice.10.bc"), b"BC").unwrap();
        assert_eq!(
            find_libdevice(Some(&root)).unwrap(),
            dir.join("libdevice.10.bc")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
