//! Panics raised while a backend starts, turned into text for an error message.
//!
//! A GPU backend that cannot start panics, often on its own worker thread: the caller then sees an
//! unrelated failure (a closed channel) while the standard hook prints the real reason with
//! "panicked at" and a backtrace hint. While [`capture`] runs, every panic message of the process
//! is recorded instead of printed, so the caller can report it as one plain error.
//!
//! "Every panic of the process" is deliberate: a backend's worker threads cannot be told apart
//! from others. The price, in a test binary running tests in parallel, is that another test's
//! failure message during a probe is recorded here rather than printed (its test still fails);
//! [`capture_fallible`] lets a computation that succeeded stand whatever panicked meanwhile.
//! Captures running at once each record every panic of their time (none takes another's).

use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::{Mutex, Once};

/// The running captures, each with its id and the messages recorded since it began (panics are
/// recorded, not printed, while there is one).
static CAPTURES: Mutex<Vec<(u64, Vec<String>)>> = Mutex::new(Vec::new());
/// The next capture's id.
static NEXT_ID: Mutex<u64> = Mutex::new(0);
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
            let recorded = CAPTURES.lock().is_ok_and(|mut captures| {
                for (_, messages) in captures.iter_mut() {
                    messages.push(payload_text(info.payload()));
                }
                !captures.is_empty()
            });
            if !recorded {
                previous(info);
            }
        }));
    });
}

/// Run `f`, catching a panic on this thread and recording the messages of panics on any thread
/// meanwhile (a backend's worker threads), without printing them. Returns `f`'s value, or the
/// messages of every panic seen, in the order they happened.
pub fn capture<T>(f: impl FnOnce() -> T) -> Result<T, Vec<String>> {
    match capture_all(f) {
        (Ok(value), messages) if messages.is_empty() => Ok(value),
        // A worker thread panicked although this one returned: the device is not usable.
        (Ok(_), messages) => Err(messages),
        (Err(payload), messages) => Err(panicked(payload, messages)),
    }
}

/// [`capture`] for a computation that reports its own failure (a read-back's `Result`): its
/// success stands even where another thread panicked meanwhile (another test of a test binary,
/// or any other work of the process: a backend whose worker died makes the read-back fail), and
/// its failure comes with the panics seen meanwhile, which carry the backend's own reason where
/// its error says only that a channel closed.
pub fn capture_fallible<T, E>(
    f: impl FnOnce() -> Result<T, E>,
) -> Result<Result<T, E>, Vec<String>> {
    match capture_all(f) {
        (Ok(Ok(value)), _) => Ok(Ok(value)),
        (Ok(Err(e)), messages) if messages.is_empty() => Ok(Err(e)),
        (Ok(Err(_)), messages) => Err(messages),
        (Err(payload), messages) => Err(panicked(payload, messages)),
    }
}

/// `f`'s outcome (its value, or this thread's panic) and the messages of every panic of the
/// process meanwhile.
fn capture_all<T>(f: impl FnOnce() -> T) -> (std::thread::Result<T>, Vec<String>) {
    install();
    let id = NEXT_ID.lock().map_or(u64::MAX, |mut next| {
        *next += 1;
        *next
    });
    if let Ok(mut captures) = CAPTURES.lock() {
        captures.push((id, Vec::new()));
    }
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let messages = CAPTURES
        .lock()
        .ok()
        .and_then(|mut captures| {
            let at = captures.iter().position(|(i, _)| *i == id)?;
            Some(captures.remove(at).1)
        })
        .unwrap_or_default();
    (result, messages)
}

/// This thread's panic as messages: the hook recorded it with the others, else its payload.
fn panicked(payload: Box<dyn std::any::Any + Send>, messages: Vec<String>) -> Vec<String> {
    if messages.is_empty() {
        vec![payload_text(payload.as_ref())]
    } else {
        messages
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

    /// A computation that reports its own failure: its success stands although another thread
    /// panicked meanwhile (in a test binary, another test: a wgpu probe once took a deliberate
    /// panic of the prefetch test for the device's), its failure comes with the panics, and its
    /// own panic as before.
    #[test]
    fn a_fallible_computation_fails_only_by_its_own_result() {
        let elsewhere = || {
            let joined = std::thread::spawn(|| panic!("another test's panic")).join();
            assert!(joined.is_err());
        };
        let ok = capture_fallible(|| -> Result<i32, String> {
            elsewhere();
            Ok(6)
        });
        assert_eq!(ok, Ok(Ok(6)));
        let failed = capture_fallible(|| -> Result<i32, String> {
            std::thread::spawn(|| panic!("worker: no driver"))
                .join()
                .unwrap_err();
            Err("channel closed".into())
        });
        assert_eq!(failed, Err(vec!["worker: no driver".to_string()]));
        let quiet = capture_fallible(|| -> Result<i32, String> { Err("no adapter".into()) });
        assert_eq!(quiet, Ok(Err("no adapter".to_string())));
        let own = capture_fallible(|| -> Result<i32, String> { panic!("probe panicked") });
        assert_eq!(own, Err(vec!["probe panicked".to_string()]));
    }
}
