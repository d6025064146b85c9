//! Panics raised while a backend starts, turned into text for an error message.
//!
//! A GPU backend that cannot start panics, often on its own worker thread: the caller then sees an
//! unrelated failure (a closed channel) while the standard hook prints the real reason with
//! "panicked at" and a backtrace hint. While [`capture`] runs, every panic message of the process
//! is recorded instead of printed, so the caller can report it as one plain error.
//!
//! "Every panic of the process" is deliberate: a backend's worker threads cannot be told apart
//! from others. The price, in a test binary running tests in parallel, is that another test's
//! failure message during a probe is recorded here rather than printed (its test still fails).

use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// How many [`capture`] calls are running (panics are recorded, not printed, while > 0).
static CAPTURING: AtomicUsize = AtomicUsize::new(0);
/// Messages recorded while capturing.
static CAPTURED: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// The text of a panic's payload.
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic without a message".into())
}

fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            if CAPTURING.load(Ordering::SeqCst) > 0 {
                if let Ok(mut captured) = CAPTURED.lock() {
                    captured.push(payload_text(info.payload()));
                }
            } else {
                previous(info);
            }
        }));
    });
}

/// Run `f`, catching a panic on this thread and recording the messages of panics on any thread
/// meanwhile (a backend's worker threads), without printing them. Returns `f`'s value, or the
/// messages of every panic seen, in the order they happened.
pub fn capture<T>(f: impl FnOnce() -> T) -> Result<T, Vec<String>> {
    install();
    CAPTURING.fetch_add(1, Ordering::SeqCst);
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CAPTURING.fetch_sub(1, Ordering::SeqCst);
    let messages = CAPTURED
        .lock()
        .map(|mut c| std::mem::take(&mut *c))
        .unwrap_or_default();
    match result {
        Ok(value) if messages.is_empty() => Ok(value),
        // A worker thread panicked although this one returned: the device is not usable.
        Ok(_) => Err(messages),
        // The hook has recorded this thread's panic with the others.
        Err(_) if !messages.is_empty() => Err(messages),
        Err(payload) => Err(vec![payload_text(payload.as_ref())]),
    }
}

/// The advice for a backend failure that means the device ran out of memory (burn's CUDA and
/// wgpu runtimes and the CUDA driver word it differently), or `None` for any other failure.
pub fn out_of_memory_advice(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let oom = [
        "out of memory",
        "out-of-memory",
        "out of device memory",
        "outofmemory",
    ]
    .iter()
    .any(|p| m.contains(p))
        || m.contains("out_of_memory");
    oom.then(|| {
        let first_line = message.lines().next().unwrap_or(message).trim();
        format!(
            "the device ran out of memory ({first_line}): the batch does not fit; \
             run again with a smaller --batch"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_in_each_backend_wording_gets_the_batch_advice() {
        for m in [
            "out of device memory allocating 68719476736 bytes\nbacktrace...",
            "An out-of-memory error happened during launch\nCaused by: ...",
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
            "Validation Error: OutOfMemory",
        ] {
            let advice = out_of_memory_advice(m).expect(m);
            assert!(advice.contains("smaller --batch"), "{advice}");
            assert!(!advice.contains('\n'), "{advice}");
        }
        assert_eq!(out_of_memory_advice("index out of bounds: len 3"), None);
    }

    #[test]
    fn panics_here_and_on_other_threads_become_messages() {
        assert_eq!(capture(|| 7), Ok(7));
        let err = capture(|| -> i32 { panic!("backend could not start") }).unwrap_err();
        assert_eq!(err, vec!["backend could not start".to_string()]);
        let err = capture(|| {
            std::thread::spawn(|| panic!("worker: no driver"))
                .join()
                .is_err()
        })
        .unwrap_err();
        assert_eq!(err, vec!["worker: no driver".to_string()]);
        // Nothing left over for the next capture.
        assert_eq!(capture(|| 1), Ok(1));
    }
}
