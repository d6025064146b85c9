//! One lock for the unit tests that use a backend's random generator.
//!
//! burn-flex keeps a single generator for the whole process, and so does cubek for the GPU
//! backends (wgpu, CUDA), while `cargo test` runs a binary's tests on parallel threads. A test
//! that seeds a generator and expects a repeatable draw fails when another test draws in
//! between (seen in CI: the dropout-mask test drew a different mask after re-seeding; the
//! training attention's test, which rebuilt its mask from a draw after re-seeding, failed there
//! once while tests that did not hold the lock drew on the GPU). So every unit test that draws,
//! directly or by building a module with random initial weights, holds [`lock`] for its whole
//! run, and a test that needs given seeds is better handed them than re-seeding.

use std::sync::{Mutex, MutexGuard};

static GENERATOR: Mutex<()> = Mutex::new(());

/// Holds the generator for the caller's test; a test that panicked while holding it does not
/// poison it for the others.
pub fn lock() -> MutexGuard<'static, ()> {
    GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
