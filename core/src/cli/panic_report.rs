//! What the user reads when something inside hvq panics: one plain message naming the input
//! being worked on, never a backtrace.
//!
//! A device that runs out of memory gets advice (a smaller `--batch`); anything else is a bug in
//! hvq and says so, with the input and where it happened, so it can be reported. Commands name
//! what they work on with [`working_on`].

use std::panic::{self, PanicHookInfo};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the command is working on, innermost last ("inspecting photo.png"), each piece with
/// its number and thread: pieces run on several threads at once (`hvq predict` decodes the next
/// batch while the device runs the current one).
static CONTEXT: Mutex<Vec<Piece>> = Mutex::new(Vec::new());

struct Piece {
    number: usize,
    thread: std::thread::ThreadId,
    what: String,
}

/// Counts [`working_on`] calls: a panic is reported once per piece of work (a failing backend
/// often panics on its worker thread and then again on the thread waiting for it), and again
/// when the command retries the work piece by piece (a batch, then each image alone).
static WORK: AtomicUsize = AtomicUsize::new(0);

/// Marks `what` as the current input until dropped.
pub struct WorkingOn(usize);

impl Drop for WorkingOn {
    fn drop(&mut self) {
        if let Ok(mut context) = CONTEXT.lock()
            && let Some(at) = context.iter().rposition(|piece| piece.number == self.0)
        {
            context.remove(at);
        }
    }
}

/// Name the input a panic report will mention (e.g. `inspecting samples/a.png`).
///
/// Test hook: when `HVQ_TEST_PANIC` is set and `what` contains its value, this panics, so the
/// report can be checked end to end (nothing in hvq is known to panic on user data).
pub fn working_on(what: impl Into<String>) -> WorkingOn {
    let what = what.into();
    let trigger = std::env::var("HVQ_TEST_PANIC").unwrap_or_default();
    let inject = !trigger.is_empty() && what.contains(&trigger);
    let number = WORK.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut context) = CONTEXT.lock() {
        context.push(Piece {
            number,
            thread: std::thread::current().id(),
            what,
        });
    }
    let guard = WorkingOn(number);
    if inject {
        panic!("test panic (HVQ_TEST_PANIC={trigger})");
    }
    guard
}

/// The innermost piece of work of the panicking thread; a thread that named none (a worker of a
/// parallel decode) reports the latest piece of any thread.
fn current_input() -> Option<String> {
    let context = CONTEXT.lock().ok()?;
    let this = std::thread::current().id();
    context
        .iter()
        .rev()
        .find(|piece| piece.thread == this)
        .or_else(|| context.last())
        .map(|piece| piece.what.clone())
}

use hvq::device::panic_capture::{out_of_memory_advice, payload_text};

/// Replace the standard panic output (install first: `hvq::device` wraps this hook while it
/// probes a backend). Only the first panic of each piece of work is reported (see [`WORK`]).
pub fn install() {
    static REPORTED: AtomicUsize = AtomicUsize::new(usize::MAX);
    panic::set_hook(Box::new(|info: &PanicHookInfo<'_>| {
        let work = WORK.load(Ordering::SeqCst);
        if REPORTED.swap(work, Ordering::SeqCst) == work {
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
                let input = current_input()
                    .map(|i| format!(" while {i}"))
                    .unwrap_or_default();
                eprintln!(
                    "hvq: internal error{input}: {}{at}\nThis is a bug in hvq: please report it \
                     with the command you ran{}.",
                    message.lines().next().unwrap_or_default(),
                    if input.is_empty() {
                        ""
                    } else {
                        " and that input"
                    }
                );
            }
        }
    }));
}
