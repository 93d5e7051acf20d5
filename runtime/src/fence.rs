//! Asymmetric memory barriers: the cost of ordering goes to the side that goes to sleep.
//!
//! The sleep/wake protocol between shards is a Dekker-style handshake: the sleeper stores
//! its "sleeping" flag and then reads its rings; a sender stores into a ring and then
//! reads the flag. Both sides need a store→load barrier. A shard sends far more often
//! than it falls asleep, so the sender only issues a compiler barrier ([`light_barrier`])
//! and the sleeper pays for both with `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`
//! ([`heavy_barrier`]), which runs a full memory barrier on every CPU currently running a
//! thread of this process. Where the kernel lacks that command, both sides fall back to a
//! sequentially consistent fence, which is always correct.

use std::sync::atomic::{compiler_fence, fence, AtomicU8, Ordering};

const UNKNOWN: u8 = 0;
const MEMBARRIER: u8 = 1;
const FENCES: u8 = 2;

/// Which barrier pair is in force: decided once per process by [`init`].
static MODE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Registers the process for expedited private membarriers, once; returns whether the
/// asymmetric (membarrier) mode is in force.
///
/// Must run before the first shard starts: a thread that saw the fence mode must never
/// meet a peer that uses the light barrier. The runtime builder calls it before spawning
/// shards; later calls return the decision already made.
pub fn init() -> bool {
    match MODE.load(Ordering::Acquire) {
        MEMBARRIER => return true,
        FENCES => return false,
        _ => {}
    }
    let registered = register_membarrier();
    let mode = if registered { MEMBARRIER } else { FENCES };
    // A racing init may have decided first; keep the first decision.
    match MODE.compare_exchange(UNKNOWN, mode, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => registered,
        Err(existing) => existing == MEMBARRIER,
    }
}

/// Whether the asymmetric barrier pair is in force.
pub fn asymmetric() -> bool {
    MODE.load(Ordering::Relaxed) == MEMBARRIER
}

fn register_membarrier() -> bool {
    if std::env::var_os("DIRIGO_NO_MEMBARRIER").is_some() {
        return false;
    }
    // SAFETY: membarrier takes two integers and touches no memory of ours; an unknown
    // command just returns -1/EINVAL, which we treat as "not available".
    let supported = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            libc::MEMBARRIER_CMD_QUERY,
            0 as libc::c_uint,
        )
    };
    if supported < 0 || supported & libc::c_long::from(libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0
    {
        return false;
    }
    // SAFETY: as above; registration only flips a flag on our mm in the kernel.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            libc::MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
            0 as libc::c_uint,
        )
    };
    rc == 0
}

/// The sender's half: orders its ring store before its flag load.
#[inline(always)]
pub(crate) fn light_barrier() {
    if MODE.load(Ordering::Relaxed) == MEMBARRIER {
        compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeper's half: a full barrier on this CPU and on every CPU running our threads.
pub(crate) fn heavy_barrier() {
    if MODE.load(Ordering::Relaxed) == MEMBARRIER {
        // SAFETY: the process registered for this command in `init`; the call touches
        // no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                libc::MEMBARRIER_CMD_PRIVATE_EXPEDITED,
                0 as libc::c_uint,
            )
        };
        if rc == 0 {
            return;
        }
    }
    fence(Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_is_idempotent_and_barriers_run() {
        let first = init();
        assert_eq!(init(), first);
        assert_eq!(asymmetric(), first);
        // Both halves must return in either mode.
        heavy_barrier();
        light_barrier();
    }
}
