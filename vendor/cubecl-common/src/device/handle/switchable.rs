// hvq patch: the transport under every device handle, chosen once per process (see
// vendor/README.md). Upstream fixes it at compile time to the channel (a runner thread per device
// that every task is sent to); on a machine with few cores each hand-over costs a thread wake-up
// and often a wait, per launched kernel. The caller transport runs each task on the thread that
// issued it, under the device's re-entrant lock (upstream's transport for builds without threads).

use core::any::Any;
use core::sync::atomic::{AtomicU8, Ordering};

use super::channel::ChannelDeviceHandle;
use super::reentrant::ReentrantMutexDeviceHandle;
use super::{CallError, DeviceHandleSpec, ServiceCreationError};
use crate::device::{DeviceId, DeviceService, ServerUtilitiesHandle};

/// Where a device's tasks run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// On one runner thread per device, each task sent to it (upstream's choice).
    Runner,
    /// On the thread that issues the task, under the device's re-entrant lock.
    Caller,
}

const UNSET: u8 = 0;
const RUNNER: u8 = 1;
const CALLER: u8 = 2;

/// The process's transport: unset until [`set_transport`] or the first handle fixes it.
static TRANSPORT: AtomicU8 = AtomicU8::new(UNSET);

fn code(transport: Transport) -> u8 {
    match transport {
        Transport::Runner => RUNNER,
        Transport::Caller => CALLER,
    }
}

/// Choose the transport of every device handle of this process. Only before the first handle
/// exists (a device's state lives with one transport): afterwards, or when already chosen
/// otherwise, the transport in force is returned as the error.
pub fn set_transport(transport: Transport) -> Result<(), Transport> {
    match TRANSPORT.compare_exchange(UNSET, code(transport), Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(()),
        Err(current) if current == code(transport) => Ok(()),
        Err(_) => Err(current_transport()),
    }
}

/// The transport in force, fixing the default (the runner) if none was chosen yet.
pub fn current_transport() -> Transport {
    let _ = TRANSPORT.compare_exchange(UNSET, RUNNER, Ordering::AcqRel, Ordering::Acquire);
    match TRANSPORT.load(Ordering::Acquire) {
        CALLER => Transport::Caller,
        _ => Transport::Runner,
    }
}

/// A handle through the process's transport.
#[derive(Clone)]
pub enum SwitchableDeviceHandle {
    /// Through the device's runner thread.
    Runner(ChannelDeviceHandle),
    /// On the calling thread.
    Caller(ReentrantMutexDeviceHandle),
}

impl DeviceHandleSpec for SwitchableDeviceHandle {
    // The runner's: callers test it only to refuse collectives on blocking transports, which hvq
    // does not use (its multi-device sums are copies between devices).
    const BLOCKING: bool = <ChannelDeviceHandle as DeviceHandleSpec>::BLOCKING;

    fn insert<S: DeviceService>(
        device_id: DeviceId,
        service: S,
    ) -> Result<Self, ServiceCreationError> {
        Ok(match current_transport() {
            Transport::Runner => Self::Runner(<ChannelDeviceHandle as DeviceHandleSpec>::insert(
                device_id, service,
            )?),
            Transport::Caller => {
                Self::Caller(<ReentrantMutexDeviceHandle as DeviceHandleSpec>::insert(
                    device_id, service,
                )?)
            }
        })
    }

    fn new<S: DeviceService>(device_id: DeviceId) -> Self {
        match current_transport() {
            Transport::Runner => Self::Runner(<ChannelDeviceHandle as DeviceHandleSpec>::new::<S>(device_id)),
            Transport::Caller => {
                let handle = <ReentrantMutexDeviceHandle as DeviceHandleSpec>::new::<S>(device_id);
                // Build the service now, as the runner's handle does: the re-entrant transport
                // builds it on its first task, and its `utilities` expects it built.
                let _ = handle.submit_blocking(|_| ());
                Self::Caller(handle)
            }
        }
    }

    fn device_id(&self) -> DeviceId {
        match self {
            Self::Runner(h) => h.device_id(),
            Self::Caller(h) => h.device_id(),
        }
    }

    fn utilities(&self) -> ServerUtilitiesHandle {
        match self {
            Self::Runner(h) => h.utilities(),
            Self::Caller(h) => h.utilities(),
        }
    }

    fn flush_queue(&self) {
        match self {
            Self::Runner(h) => h.flush_queue(),
            Self::Caller(h) => h.flush_queue(),
        }
    }

    fn submit_blocking<'a, R: Send, T: FnOnce(&mut dyn Any) -> R + Send + 'a>(
        &self,
        task: T,
    ) -> Result<R, CallError> {
        match self {
            Self::Runner(h) => h.submit_blocking(task),
            Self::Caller(h) => h.submit_blocking(task),
        }
    }

    fn submit<T: FnOnce(&mut dyn Any) + Send + 'static>(&self, task: T) {
        match self {
            Self::Runner(h) => h.submit(task),
            Self::Caller(h) => h.submit(task),
        }
    }

    fn exclusive<R: Send, T: FnOnce() -> R + Send>(&self, task: T) -> Result<R, CallError> {
        match self {
            Self::Runner(h) => h.exclusive(task),
            Self::Caller(h) => h.exclusive(task),
        }
    }

    fn shutdown(device_id: DeviceId) {
        // Only the runner transport has threads to stop.
        if current_transport() == Transport::Runner {
            <ChannelDeviceHandle as DeviceHandleSpec>::shutdown(device_id);
        }
    }
}
