//! One lock for the unit tests that use the CPU backend's random generator.
//!
//! burn-flex keeps a single generator for the whole process, and `cargo test` runs a binary's
//! tests on parallel threads. A test that seeds the generator and expects a repeatable draw
//! fails when another test draws in between (seen in CI: the dropout-mask test drew a different
//! mask after re-seeding). So every unit test that draws, directly or by building a module with
//! random initial weights, holds [`lock`] for its whole run.

use std::sync::{Mutex, MutexGuard};

static GENERATOR: Mutex<()> = Mutex::new(());

/// Holds the generator for the caller's test; a test that panicked while holding it does not
/// poison it for the others.
pub fn lock() -> MutexGuard<'static, ()> {
    GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
