//! Pinning benchmark threads that are not shards.

/// Pins the current thread to `cpu` when given; returns whether it is pinned.
pub(crate) fn pin_current(cpu: Option<usize>) -> bool {
    match cpu {
        Some(id) => core_affinity::set_for_current(core_affinity::CoreId { id }),
        None => false,
    }
}
