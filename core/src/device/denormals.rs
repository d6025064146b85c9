//! Denormal (subnormal) floats flushed to zero on the CPU backend's threads.
//!
//! Why: the EMA codebooks' unused codes decay by the EMA's 0.99 at every update, so a trained
//! model's codebooks are mostly denormal numbers (the shipped ELPV model: 142 032 of its 1.26
//! million values, every entry of 63 of the 64 codes at levels 2–5). x86 CPUs handle an
//! arithmetic operation on a denormal in microcode, about a hundred times slower than on a
//! normal float, and the code search multiplies every token with every code: the shipped
//! model's VQ stage took 227 ms at batch 16 against 32 ms for the whole encoder (`hvq bench
//! --device cpu --config default --batch 16`, Intel Xeon, 2026-12-02). Flushing changes only
//! values below 1.2e-38 in magnitude, which are zero for every purpose here (a code that small
//! contributes nothing to a distance of order 1); GPUs flush them in most of their arithmetic too.
//!
//! The setting is a per-thread control register (x86-64: MXCSR's flush-to-zero and
//! denormals-are-zero bits; AArch64: FPCR.FZ). [`flush_denormals`] sets it on the calling thread
//! and on every thread of the worker pool the CPU backend computes on; threads started later by
//! a thread that has it inherit it.

/// Flush denormals to zero on this thread and, once, on every thread of the CPU backend's
/// worker pool. Returns whether this platform has the setting (false elsewhere, e.g. wasm).
pub fn flush_denormals() -> bool {
    if !set_on_this_thread() {
        return false;
    }
    #[cfg(feature = "parallel")]
    {
        static POOL: std::sync::Once = std::sync::Once::new();
        POOL.call_once(|| {
            rayon::broadcast(|_| {
                set_on_this_thread();
            });
        });
    }
    true
}

/// Set the flush bits on the calling thread; false where the platform has none.
fn set_on_this_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        /// MXCSR bit 15: results that would be denormal become zero (flush to zero).
        const FLUSH_TO_ZERO: u32 = 1 << 15;
        /// MXCSR bit 6: denormal inputs are read as zero.
        const DENORMALS_ARE_ZERO: u32 = 1 << 6;
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register only; every
        // x86-64 CPU has them (SSE2 is part of the architecture) and the bits set here (FTZ,
        // DAZ: DAZ exists on every x86-64 CPU) change only how denormals are rounded.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
            csr |= FLUSH_TO_ZERO | DENORMALS_ARE_ZERO;
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
        }
        true
    }
    #[cfg(target_arch = "aarch64")]
    {
        /// FPCR bit 24 (FZ): denormal inputs and results are flushed to zero.
        const FLUSH_TO_ZERO: u64 = 1 << 24;
        let mut fpcr: u64;
        // SAFETY: FPCR is this thread's floating-point control register, readable and writable
        // at EL0; FZ changes only how denormals are handled.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            fpcr |= FLUSH_TO_ZERO;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack, preserves_flags));
        }
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hint::black_box;

    /// A product that is denormal without the flush and zero with it.
    fn tiny_product() -> f32 {
        black_box(1.0e-39f32) * black_box(1.5f32)
    }

    #[test]
    fn denormals_become_zero_on_this_thread_and_the_pool() {
        // On a fresh thread (the test harness's threads may be reused by other tests): the
        // product keeps its denormal value before the flush and is zero after, on this thread,
        // on every pool thread and on a thread started afterwards.
        std::thread::spawn(|| {
            assert!(tiny_product() > 0.0, "denormal arithmetic before the flush");
            if !flush_denormals() {
                return;
            }
            assert_eq!(tiny_product(), 0.0, "calling thread");
            #[cfg(feature = "parallel")]
            {
                let seen = rayon::broadcast(|_| tiny_product());
                assert!(seen.iter().all(|&v| v == 0.0), "pool threads: {seen:?}");
            }
            let child = std::thread::spawn(tiny_product)
                .join()
                .expect("child thread");
            assert_eq!(child, 0.0, "a thread started after the flush");
        })
        .join()
        .expect("test thread");
    }
}
