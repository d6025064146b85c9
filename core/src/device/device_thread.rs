//! Which thread runs a GPU device's work, and `HVQ_DEVICE_THREAD`, which picks it for a process.
//!
//! cubecl (under burn's GPU backends) sends every operation's device work (allocating its
//! output, encoding its kernel launch) as a task to one runner thread per device. Each hand-over
//! is a queue push and usually a thread wake-up, and an operation that needs an answer back waits
//! for the runner; on a GPU whose kernels take microseconds that hand-over may be what a step
//! costs (`hvq bench` reports the host's cost of one operation and its share of a step). The
//! patched cubecl-common (`vendor/`) takes the transport as a process-wide choice, made before
//! the first device starts: `runner` (upstream's, the default) or `caller`, the issuing thread
//! running the task itself under the device's lock, so `scripts/gpu-bench.sh
//! --device-thread-ab` measures both on the device with one binary. On lavapipe (a CPU driver
//! sharing this VM's two cores with the host) the two are within its noise. Read once, at
//! start-up ([`apply_variable`], the CLI's first step).

use crate::error::Result;

/// The environment variable that picks the thread.
pub const VARIABLE: &str = "HVQ_DEVICE_THREAD";

/// Where a GPU device's work runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceThread {
    /// On one runner thread per device, each operation's work sent to it (cubecl's design).
    Runner,
    /// On the thread that issues the operation, under the device's lock.
    Caller,
}

impl DeviceThread {
    /// Every choice, the default first.
    pub const ALL: [DeviceThread; 2] = [DeviceThread::Runner, DeviceThread::Caller];

    /// The name the variable takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            DeviceThread::Runner => "runner",
            DeviceThread::Caller => "caller",
        }
    }

    /// The choice named `name` (one of [`DeviceThread::ALL`]'s names).
    pub fn parse(name: &str) -> Result<Self> {
        crate::env_setting::named(VARIABLE, name, &Self::ALL, Self::name)
    }
}

/// Read `HVQ_DEVICE_THREAD` (unset: the default, the first of [`DeviceThread::ALL`]) and fix
/// the transport for this process: a typo is an error rather than a silent measurement of the
/// default, and so is a choice made after a device already started with the other one.
pub fn apply_variable() -> Result<DeviceThread> {
    let thread = crate::env_setting::read(VARIABLE, DeviceThread::ALL[0], DeviceThread::parse)?;
    set(thread)?;
    Ok(thread)
}

/// Fix the transport for this process. Only before the first GPU device starts; afterwards
/// only the one in force is accepted (a no-op without a GPU backend).
pub fn set(thread: DeviceThread) -> Result<()> {
    #[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
    {
        use cubecl::device_handle::{Transport, set_transport};
        let transport = match thread {
            DeviceThread::Runner => Transport::Runner,
            DeviceThread::Caller => Transport::Caller,
        };
        set_transport(transport).map_err(|_| {
            crate::error::HvqError::Config(format!(
                "{VARIABLE}={}: a GPU device already runs its work on the {} thread; the \
                 choice is made once, before the first device starts",
                thread.name(),
                current().name()
            ))
        })
    }
    #[cfg(not(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm"))))]
    {
        let _ = thread;
        Ok(())
    }
}

/// The transport in force (fixing cubecl's default, the runner, if none was chosen yet).
/// [`DeviceThread::Caller`] in builds without a GPU backend or without threads (wasm), where no
/// runner exists.
pub fn current() -> DeviceThread {
    #[cfg(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm")))]
    {
        match cubecl::device_handle::current_transport() {
            cubecl::device_handle::Transport::Runner => DeviceThread::Runner,
            cubecl::device_handle::Transport::Caller => DeviceThread::Caller,
        }
    }
    #[cfg(not(all(any(feature = "wgpu", feature = "cuda"), not(target_family = "wasm"))))]
    DeviceThread::Caller
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in DeviceThread::ALL {
            assert_eq!(DeviceThread::parse(t.name()).unwrap(), t);
            assert_eq!(DeviceThread::parse(&t.name().to_uppercase()).unwrap(), t);
        }
        let e = DeviceThread::parse("worker").unwrap_err().to_string();
        assert!(e.contains(VARIABLE) && e.contains("runner, caller"), "{e}");
    }
}
