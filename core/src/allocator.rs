//! Keep freed memory in the process instead of handing it back to the OS on every tensor drop.
//!
//! burn's CPU backend allocates a fresh buffer for most operation outputs. With glibc's defaults,
//! buffers above a dynamic threshold (128 KiB at start) are `mmap`ed and `munmap`ed one by one, and
//! freed heap tops are trimmed, so every forward pass pays page faults and kernel page zeroing
//! for the same activation sizes again (`clear_page_erms` was 5 % of a profiled `hvq bench`).
//! Raising the mmap threshold to glibc's maximum and not trimming lets `malloc` reuse the
//! freed blocks. Measured with `hvq bench --config official --batch 8` (same sitting): end to end
//! 1125 → 961 ms, backbone 494 → 447 ms, for 17 MiB more peak memory. (mimalloc, tried through
//! `LD_PRELOAD`, was slower here: 1268 ms.)
//!
//! Process-wide, so binaries call it once at start ([`keep_freed_memory`]); a no-op where the C
//! library is not glibc.

/// glibc's upper bound for `M_MMAP_THRESHOLD` on 64-bit targets (`HEAP_MAX_SIZE / 2`): larger
/// values are refused. Blocks above it (none at batch 8 of the official model) are still mapped.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Slack kept at the top of the heap after `free` and added to each heap extension.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TOP_PAD: libc::c_int = 64 << 20;

/// Tune glibc's `malloc` so freed tensor buffers are reused rather than returned to the OS.
/// Returns whether the settings were applied (false on other C libraries and platforms).
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_settings() {
        // mallopt returns 0 for a value it refuses (e.g. a threshold above its maximum), so this
        // fails if a constant drifts out of glibc's range.
        assert!(keep_freed_memory());
        // A block just under the threshold now comes from the heap: allocating and freeing it
        // repeatedly must not be refused or crash.
        for _ in 0..4 {
            let block = vec![1u8; (MMAP_THRESHOLD as usize) - 4096];
            assert_eq!(block[block.len() - 1], 1);
        }
    }
}
