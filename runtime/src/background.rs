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
//!
//! Whatever its priority, a service thread with long work (archiving and writing a
//! checkpoint of a gigabyte) gives way at points in it ([`give_way`]): once it has run
//! for [`GIVE_WAY_EVERY`] since it last did, it offers its CPU (`sched_yield`) to a
//! shard that waits for it. Without these points the kernel lets the thread finish its
//! time slice first (a scheduler tick, 1–4 ms) while the shard, woken by a record,
//! waits; the thread also gets the CPU back at once where no shard waits, so its work
//! slows by only a system call every [`GIVE_WAY_EVERY`].
//!
//! An offer, not a promise: while the kernel still owes the thread CPU time (it waited
//! behind shards that poll for their timers, and so look busy to the kernel), the yield
//! keeps it running until it has caught up. Measured on 2 shards over 2 cores, its bursts
//! then last 0.2–0.55 ms, against a full tick without these points.

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

/// How long a service thread that gives way ([`give_way_at_points`]) runs between two
/// offers of its CPU to a shard that waits for it (which the kernel takes unless it
/// still owes the thread CPU time; see the [module docs](self)).
pub const GIVE_WAY_EVERY: Duration = Duration::from_micros(50);

thread_local! {
    /// When this thread last gave way; `None` on threads that never do (shards, and
    /// every thread that did not ask).
    static LAST_GAVE_WAY: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Makes the calling thread give way to the shards at every [`give_way`] point once it
/// has run for [`GIVE_WAY_EVERY`]. For service threads only: a shard that gave way would
/// hand its CPU to whatever else runs.
///
/// ```
/// use dirigo_runtime::background::{give_way, give_way_at_points};
///
/// let service = std::thread::spawn(|| {
///     give_way_at_points();
///     let mut sum = 0u64;
///     for chunk in 0..1_000u64 {
///         sum += (0..1_000u64).map(|i| i * chunk).sum::<u64>();
///         give_way(); // a shard waiting for this CPU gets it here
///     }
///     sum
/// });
/// assert!(service.join().unwrap() > 0);
/// ```
pub fn give_way_at_points() {
    LAST_GAVE_WAY.with(|last| last.set(Some(Instant::now())));
}

/// A point in long work where the calling thread gives way to a shard that waits for its
/// CPU, if it asked to ([`give_way_at_points`]) and has run for [`GIVE_WAY_EVERY`] since
/// it last did. Elsewhere (a shard, a thread that did not ask) it does nothing, so code
/// that runs on both may call it freely.
pub fn give_way() {
    LAST_GAVE_WAY.with(|last| {
        let Some(at) = last.get() else {
            return;
        };
        let now = Instant::now();
        if now.duration_since(at) >= GIVE_WAY_EVERY {
            std::thread::yield_now();
            last.set(Some(Instant::now()));
        }
    });
}

/// Whether the calling thread gives way at [`give_way`] points.
pub fn gives_way() -> bool {
    LAST_GAVE_WAY.with(|last| last.get().is_some())
}

/// When the calling thread last gave way (`None`: it never does).
#[cfg(test)]
pub(crate) fn last_gave_way() -> Option<Instant> {
    LAST_GAVE_WAY.with(Cell::get)
}

/// The scheduling priority of a service thread beside the shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ServicePriority {
    /// Linux's idle priority: only CPU time the shards leave.
    Idle,
    /// The same priority as the shards (the default): the service keeps its pace on a
    /// busy machine, and the shards' tail pays for it, by up to a scheduler tick where it
    /// does not [`give_way`].
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
    fn only_threads_that_ask_give_way() {
        assert!(!gives_way(), "a thread gives way only once it asks");
        give_way(); // does nothing here
        assert!(!gives_way());
        let service = std::thread::spawn(|| {
            give_way_at_points();
            let before = LAST_GAVE_WAY.with(Cell::get).expect("set");
            std::thread::sleep(GIVE_WAY_EVERY * 2);
            give_way();
            let after = LAST_GAVE_WAY.with(Cell::get).expect("set");
            (gives_way(), after > before)
        });
        assert_eq!(
            service.join().unwrap(),
            (true, true),
            "it gave way once due"
        );
        assert!(
            !gives_way(),
            "asking on one thread leaves the others as they were"
        );
    }

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
