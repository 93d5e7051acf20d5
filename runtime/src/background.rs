//! Threads beside the shards: the checkpoint coordinator, the metrics listener and other
//! service threads that do work no record waits for. On a machine where every core runs
//! a shard, such a thread takes its CPU from a shard, and a record behind that shard
//! waits for a scheduler slice (milliseconds). [`yield_to_shards`] puts the calling thread
//! at Linux's idle priority (`SCHED_IDLE`): it runs on CPU time the shards leave, and a
//! shard that wakes with work preempts it at once.
//!
//! The price is paid by the service, not the records: where the shards keep every core
//! busy, such a thread gets only a small share (the kernel still gives it some, so it
//! never starves for good), and its work takes longer — a checkpoint completes later, a
//! scrape answers later. Each caller documents what that means for it and lets the user
//! choose normal priority instead ([`ServicePriority`]).

use std::io;

/// The scheduling priority of a service thread beside the shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServicePriority {
    /// Linux's idle priority: only CPU time the shards leave.
    Idle,
    /// The same priority as the shards (the default): the service keeps its pace on a
    /// busy machine, and the shards' tail pays for it.
    #[default]
    Normal,
}

impl ServicePriority {
    /// Applies this priority to the calling thread. [`ServicePriority::Normal`] changes
    /// nothing.
    ///
    /// # Errors
    /// When the system refuses idle priority (not Linux, or a policy forbids it): the
    /// thread goes on at its normal priority.
    ///
    /// # Examples
    /// ```
    /// use dirigo_runtime::background::ServicePriority;
    ///
    /// let service = std::thread::spawn(|| {
    ///     ServicePriority::Idle.apply().expect("Linux grants idle priority");
    ///     2 + 2
    /// });
    /// assert_eq!(service.join().unwrap(), 4);
    /// ```
    pub fn apply(self) -> io::Result<()> {
        match self {
            Self::Idle => yield_to_shards(),
            Self::Normal => Ok(()),
        }
    }

    /// Parses the configuration spelling: `"idle"` or `"normal"` (see [`name`](Self::name)).
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Idle, Self::Normal]
            .into_iter()
            .find(|priority| priority.name() == text)
    }

    /// The configuration spelling, which [`parse`](Self::parse) reads back.
    ///
    /// ```
    /// use dirigo_runtime::background::ServicePriority;
    ///
    /// assert_eq!(ServicePriority::Idle.name(), "idle");
    /// assert_eq!(ServicePriority::parse(ServicePriority::Normal.name()), Some(ServicePriority::Normal));
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Normal => "normal",
        }
    }
}

/// Puts the calling thread at Linux's idle scheduling priority (`SCHED_IDLE`).
///
/// # Errors
/// When the system refuses: the thread goes on at its normal priority.
pub fn yield_to_shards() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` with pid 0 changes only the calling thread; `param` is
    // a valid, initialised `sched_param` that outlives the call (the kernel copies it).
    let result = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the calling thread runs at idle priority.
pub fn at_idle_priority() -> bool {
    // SAFETY: `sched_getscheduler(0)` only reads the calling thread's policy.
    unsafe { libc::sched_getscheduler(0) == libc::SCHED_IDLE }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_priority_applies_to_the_calling_thread_only() {
        // The test may itself run at idle priority (a build at low priority), so the
        // spawning thread is compared with itself before and after.
        let spawner_before = at_idle_priority();
        let service_after = std::thread::spawn(|| {
            ServicePriority::Idle
                .apply()
                .expect("idle priority is granted");
            at_idle_priority()
        })
        .join()
        .unwrap();
        assert!(service_after);
        assert_eq!(at_idle_priority(), spawner_before);
    }

    #[test]
    fn normal_priority_changes_nothing() {
        let (before, after) = std::thread::spawn(|| {
            let before = at_idle_priority();
            ServicePriority::Normal.apply().unwrap();
            (before, at_idle_priority())
        })
        .join()
        .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn spellings_parse() {
        assert_eq!(ServicePriority::parse("idle"), Some(ServicePriority::Idle));
        assert_eq!(
            ServicePriority::parse("normal"),
            Some(ServicePriority::Normal)
        );
        assert_eq!(ServicePriority::parse("low"), None);
    }
}
