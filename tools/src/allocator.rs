//! The `dirigo` command's allocator (mimalloc) and whether it gives freed memory back to
//! the operating system.
//!
//! Shards allocate message batches that other shards free. mimalloc frees those into the
//! owning thread's pages without a lock; the system allocator took an arena lock for each,
//! and its trimming under that lock stalled shards for milliseconds.
//!
//! By default mimalloc also *purges* memory that stayed free for a while (1 s in the
//! mimalloc 3 linked here, longer for whole arenas): `madvise(MADV_DONTNEED)`,
//! which makes the kernel shoot down the process's TLB entries on every core running one
//! of its threads, and the next use of that memory faults its pages in again, zeroed. On a
//! virtual machine that reports free pages to its host, the host takes them away and
//! gives them back on the next touch, and that time shows as stolen. In 5 alternating
//! pairs of `dirigo bench peer` against `dirigo bench peer --release-freed-memory` (both
//! systems share the process and its allocator), dirigo's p99 was 230–414 µs with freed
//! memory kept (median 255) against 253–699 µs with it released (median 359);
//! timely-dataflow's was 110–189 µs (median 153) against 1.6–8.2 ms, with no CPU time
//! stolen during its kept runs and 20–50 ms per CPU during its released ones.
//!
//! So the command keeps freed memory for reuse ([`keep_freed_memory`], at start): its
//! resident size stays at its high-water mark, which is what a latency-critical pipeline
//! on its own cores wants. `[runtime] release_freed_memory = true` in the configuration
//! (or `--release-freed-memory` for `dirigo bench peer`) restores mimalloc's default, and
//! `MIMALLOC_PURGE_DELAY`, mimalloc's own setting, wins over the default when it is set.

use std::os::raw::c_long;

/// The allocator of the whole process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`, the same in
/// mimalloc 2 and 3): milliseconds before freed memory is purged; negative: never.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// mimalloc's own purge delay (from its defaults or the environment), read before this
/// module first changes it.
static MIMALLOC_PURGE_DELAY_MS: std::sync::OnceLock<c_long> = std::sync::OnceLock::new();
/// The environment variable through which mimalloc reads the purge delay itself.
const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// Keeps freed memory in the process from now on, unless `MIMALLOC_PURGE_DELAY` is set
/// (then mimalloc's reading of it stands). Called once at start, before any shard runs.
pub fn keep_freed_memory() {
    if std::env::var_os(PURGE_DELAY_VAR).is_none() {
        set_release_freed_memory(false);
    }
}

/// Whether freed memory goes back to the operating system (after mimalloc's default
/// delay) or stays with the process for reuse. Process-wide; call it before the shards
/// start (mimalloc reads its options without synchronisation).
pub fn set_release_freed_memory(release: bool) {
    let delay = if release {
        mimalloc_purge_delay_ms()
    } else {
        mimalloc_purge_delay_ms();
        -1
    };
    // SAFETY: `mi_option_set` stores a plain integer into mimalloc's option table, for an
    // option index inside the table (checked by mimalloc too). mimalloc reads the option
    // without a lock, so it is set from the main thread before the shards start, and a
    // reader that saw the old value would only purge once more or once less.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, delay) }
}

/// The purge delay mimalloc had before this module changed it, milliseconds.
fn mimalloc_purge_delay_ms() -> c_long {
    *MIMALLOC_PURGE_DELAY_MS.get_or_init(|| {
        // SAFETY: as in `releases_freed_memory`.
        unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }
    })
}

/// Whether freed memory goes back to the operating system now.
pub fn releases_freed_memory() -> bool {
    // SAFETY: `mi_option_get` reads one entry of mimalloc's option table (initialising it
    // from the environment the first time); the index is inside the table.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) >= 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident memory of the process, bytes.
    fn resident_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("procfs");
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// Resident memory after touching and freeing 256 MiB and asking mimalloc to collect.
    fn resident_after_a_freed_block() -> u64 {
        let block = vec![1u8; 256 << 20];
        assert_eq!(block[block.len() - 1], 1);
        drop(block);
        // SAFETY: `mi_collect` is safe to call from any thread at any time.
        unsafe { libmimalloc_sys::mi_collect(true) };
        resident_bytes()
    }

    /// One test for the process-wide option, so that no other test races it: the option
    /// set is mimalloc's purge delay (it decides whether a freed block stays resident).
    #[test]
    fn kept_memory_stays_resident_and_released_memory_does_not() {
        let initial = mimalloc_purge_delay_ms();
        if std::env::var_os(PURGE_DELAY_VAR).is_none() {
            // mimalloc 3's default: the index is the purge delay's.
            assert_eq!(initial, 1000, "mimalloc's default");
        }
        set_release_freed_memory(false);
        assert!(!releases_freed_memory());
        let kept = resident_after_a_freed_block();
        // Purging at once, so that the collection below gives the block back.
        // SAFETY: as in `set_release_freed_memory`.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, 0) };
        assert!(releases_freed_memory());
        let released = resident_after_a_freed_block();
        assert!(
            kept > released + (128 << 20),
            "kept {kept} bytes resident, released down to {released}"
        );
        set_release_freed_memory(true);
        // SAFETY: as in `releases_freed_memory`.
        let restored = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(restored, initial);
    }
}
