//! Whether the process's memory may be backed by transparent huge pages (THP).
//!
//! A page fault on memory the kernel backs with a huge page zeroes all 2 MiB of it, on
//! the faulting thread, before the thread goes on: hundreds of microseconds on bare
//! metal, milliseconds on a virtual machine whose host backs the page only when it is
//! first touched. Allocators ask for huge pages (mimalloc, for one, marks its arenas with
//! `MADV_HUGEPAGE`), so every time a shard's heap grows into fresh memory — at start-up,
//! when a burst fills queues and windows, after the allocator returned memory to the
//! kernel — a handler stalls while the kernel clears huge pages. Measured in
//! `dirigo bench peer` on a 2-vCPU virtual machine (3 runs with
//! `--transparent-huge-pages` and 3 without, alternating): with huge pages the first
//! 3–8 windows of most runs were 5–45 ms late and dirigo's p99 was 8–37 ms; without them
//! no run started late and the p99 was 0.34–0.73 ms.
//!
//! So a [`Runtime`](crate::Runtime) turns transparent huge pages off for its process
//! unless it is built with
//! [`transparent_huge_pages(true)`](crate::RuntimeBuilder::transparent_huge_pages): a
//! pipeline that keeps a large, long-lived heap and cares more for throughput than for
//! its tail may want them back. The setting is the process's (Linux keeps one flag per
//! process, `PR_SET_THP_DISABLE`), so the runtime built last decides it; it applies to
//! pages faulted from then on.

use std::io;

/// Allows (`true`) or forbids (`false`) transparent huge pages for the whole process,
/// from the next page fault on. Elsewhere than on Linux this does nothing and returns
/// `Ok`.
///
/// ```
/// use dirigo_runtime::huge_pages;
///
/// huge_pages::set_allowed(false).unwrap();
/// assert_eq!(huge_pages::allowed().unwrap(), Some(false));
/// huge_pages::set_allowed(true).unwrap();
/// ```
pub fn set_allowed(allowed: bool) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let disable: libc::c_ulong = if allowed { 0 } else { 1 };
        // SAFETY: PR_SET_THP_DISABLE takes its flag by value and three zero arguments; it
        // reads no memory of ours.
        let result = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, disable, 0, 0, 0) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = allowed;
    Ok(())
}

/// Whether transparent huge pages are allowed for this process: `None` where the kernel
/// cannot say (not Linux).
pub fn allowed() -> io::Result<Option<bool>> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_GET_THP_DISABLE takes no pointers; it returns the flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        if disabled < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Some(disabled == 0))
    }
    #[cfg(not(target_os = "linux"))]
    Ok(None)
}

/// Applies a runtime's setting, logging what it did; a kernel that refuses is not a
/// reason to stop the runtime (it only costs latency), so the error is logged.
pub(crate) fn apply(allowed: bool) {
    match set_allowed(allowed) {
        Ok(()) => tracing::debug!(allowed, "transparent huge pages for this process"),
        Err(error) => tracing::warn!(
            allowed,
            %error,
            "could not set whether this process may use transparent huge pages"
        ),
    }
}
