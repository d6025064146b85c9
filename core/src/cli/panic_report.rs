//! What the user reads when something inside hvq panics: one plain message, never a backtrace.
//!
//! A device that runs out of memory gets advice (a smaller `--batch`); anything else is a bug in
//! hvq and says so, with where it happened, so it can be reported.

use std::panic::{self, PanicHookInfo};
use std::sync::atomic::{AtomicBool, Ordering};

use hvq::device::panic_capture::{out_of_memory_advice, payload_text};

/// Replace the standard panic output (install first: `hvq::device` wraps this hook while it
/// probes a backend). Only the first panic of the process is reported: a failing backend often
/// panics on its worker thread and then again on the thread that was waiting for it.
pub fn install() {
    static REPORTED: AtomicBool = AtomicBool::new(false);
    panic::set_hook(Box::new(|info: &PanicHookInfo<'_>| {
        if REPORTED.swap(true, Ordering::SeqCst) {
            return;
        }
        let message = payload_text(info.payload());
        match out_of_memory_advice(&message) {
            Some(advice) => eprintln!("hvq: {advice}"),
            None => {
                let at = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                eprintln!(
                    "hvq: internal error: {}{at}\nThis is a bug in hvq: please report it with the \
                     command you ran.",
                    message.lines().next().unwrap_or_default()
                );
            }
        }
    }));
}
