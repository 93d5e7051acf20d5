//! Checks the machine before any shard starts, and turns what is missing into a message
//! that says what to do: io_uring (glommio runs on it) and the locked-memory limit
//! (glommio registers its I/O buffers with io_uring, which locks them).

use std::fmt;

/// What the preflight found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreflightReport {
    /// `RLIMIT_MEMLOCK` soft limit in bytes; `None` when unlimited.
    pub memlock_limit: Option<u64>,
    /// Whether the process may lock memory regardless of the limit (root or
    /// `CAP_IPC_LOCK`).
    pub may_lock_any: bool,
    /// Locked memory the runtime needs.
    pub memlock_needed: u64,
    /// io_uring opcodes that glommio can use but this kernel does not support.
    pub missing_opcodes: Vec<&'static str>,
}

/// Why the runtime cannot start here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PreflightError {
    /// Creating an io_uring instance failed.
    IoUringUnavailable {
        /// The OS error.
        error: String,
    },
    /// The locked-memory limit is below what the shards need.
    MemlockTooLow {
        /// The limit in bytes.
        limit: u64,
        /// What is needed in bytes.
        needed: u64,
    },
}

impl fmt::Display for PreflightError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IoUringUnavailable { error } => write!(
                f,
                "io_uring is not available ({error}). dirigo needs Linux 5.8 or newer with \
                 io_uring enabled: check `sysctl kernel.io_uring_disabled` (must be 0), and in \
                 a container allow the io_uring_setup/io_uring_enter/io_uring_register \
                 syscalls (docker: --security-opt seccomp=unconfined)"
            ),
            Self::MemlockTooLow { limit, needed } => write!(
                f,
                "the locked-memory limit is {} KiB but the shards need {} KiB for their \
                 io_uring buffers. Raise it (`ulimit -l {}` in the shell, LimitMEMLOCK= in a \
                 systemd unit, `--ulimit memlock=-1` for docker), run with CAP_IPC_LOCK, or \
                 lower the per-shard I/O memory (RuntimeBuilder::io_memory)",
                limit / 1024,
                needed.div_ceil(1024),
                needed.div_ceil(1024)
            ),
        }
    }
}

impl std::error::Error for PreflightError {}

/// Opcodes glommio uses for files, sockets and timers.
const WANTED_OPCODES: &[(u8, &str)] = &[
    (io_uring::opcode::Read::CODE, "read"),
    (io_uring::opcode::Write::CODE, "write"),
    (io_uring::opcode::ReadFixed::CODE, "read_fixed"),
    (io_uring::opcode::WriteFixed::CODE, "write_fixed"),
    (io_uring::opcode::Fsync::CODE, "fsync"),
    (io_uring::opcode::PollAdd::CODE, "poll_add"),
    (io_uring::opcode::Timeout::CODE, "timeout"),
    (io_uring::opcode::AsyncCancel::CODE, "async_cancel"),
    (io_uring::opcode::OpenAt::CODE, "openat"),
    (io_uring::opcode::Close::CODE, "close"),
    (io_uring::opcode::Statx::CODE, "statx"),
    (io_uring::opcode::Accept::CODE, "accept"),
    (io_uring::opcode::Connect::CODE, "connect"),
    (io_uring::opcode::Send::CODE, "send"),
    (io_uring::opcode::Recv::CODE, "recv"),
];

/// Checks io_uring and the memlock limit for `shards` shards that each register
/// `io_memory` bytes.
///
/// ```
/// match dirigo_runtime::preflight::preflight(2, 1 << 20) {
///     Ok(report) => assert!(report.memlock_needed >= 2 << 20),
///     // The message says what to change, e.g. which `ulimit -l` to set.
///     Err(error) => eprintln!("cannot run here: {error}"),
/// }
/// ```
pub fn preflight(shards: usize, io_memory: usize) -> Result<PreflightReport, PreflightError> {
    let missing_opcodes = probe_io_uring()?;
    let memlock_limit = memlock_limit();
    let may_lock_any = may_lock_any_memory();
    // glommio rounds I/O memory up to at least 64 KiB per shard, plus its rings.
    let per_shard = io_memory.max(64 * 1024) as u64 + 64 * 1024;
    let memlock_needed = per_shard * shards as u64;
    check_memlock(memlock_limit, may_lock_any, memlock_needed)?;
    Ok(PreflightReport {
        memlock_limit,
        may_lock_any,
        memlock_needed,
        missing_opcodes,
    })
}

/// The memlock rule on its own, for any inputs.
pub fn check_memlock(
    limit: Option<u64>,
    may_lock_any: bool,
    needed: u64,
) -> Result<(), PreflightError> {
    match limit {
        Some(limit) if !may_lock_any && limit < needed => {
            Err(PreflightError::MemlockTooLow { limit, needed })
        }
        _ => Ok(()),
    }
}

fn probe_io_uring() -> Result<Vec<&'static str>, PreflightError> {
    let ring = io_uring::IoUring::new(4).map_err(|error| PreflightError::IoUringUnavailable {
        error: error.to_string(),
    })?;
    let mut probe = io_uring::Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err() {
        // Kernels before 5.6 cannot be probed; they lack most of these anyway.
        return Ok(WANTED_OPCODES.iter().map(|(_, name)| *name).collect());
    }
    Ok(WANTED_OPCODES
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect())
}

fn memlock_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer we pass, which points to
    // a live, properly aligned local.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) };
    if rc != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(limit.rlim_cur)
}

/// Root, or `CAP_IPC_LOCK` in the effective capability set.
fn may_lock_any_memory() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_on_this_machine() {
        let report = preflight(2, 1 << 20).expect("the test machine runs glommio");
        assert!(report.memlock_needed >= 2 << 20);
    }

    #[test]
    fn memlock_rule() {
        assert!(check_memlock(None, false, u64::MAX).is_ok());
        assert!(check_memlock(Some(10), true, 100).is_ok());
        assert!(check_memlock(Some(100), false, 100).is_ok());
        let error = check_memlock(Some(64 * 1024), false, 8 << 20).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("64 KiB"), "{message}");
        assert!(message.contains("ulimit -l 8192"), "{message}");
    }

    #[test]
    fn io_uring_message_says_what_to_do() {
        let message = PreflightError::IoUringUnavailable {
            error: "Operation not permitted (os error 1)".into(),
        }
        .to_string();
        assert!(message.contains("kernel.io_uring_disabled"));
        assert!(message.contains("seccomp"));
    }

    #[test]
    fn reads_the_memlock_limit_without_failing() {
        // Whatever the limit is, reading it must not fail or panic.
        let _ = memlock_limit();
        let _ = may_lock_any_memory();
    }
}
