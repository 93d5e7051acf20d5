//! What a panicking handler does to its app: the one place that decides it.
//!
//! Until the runtime can restore an actor from a checkpoint, a handler that panics (in
//! [`Actor::receive`](crate::Actor::receive) or a critical section, or in a lessee's
//! `snapshot` or a lessor's `merge`, which change its state too) **fails its app**: the
//! actor's state may be half-updated and the message it was handling is gone, so going on
//! would quietly give wrong results. Re-creating the actor empty, as the runtime once did,
//! lost open windows and made a source start again from its first record. Instead:
//!
//! - the app is marked failed, with the first panic's message ([`AppFailure`], read with
//!   [`Runtime::app_failure`](crate::Runtime::app_failure));
//! - from then on no handler of the app runs: every message addressed to one of its
//!   actors (waiting in a mailbox, held by a blocked lessor, in a ring, on a timer, or
//!   sent afterwards) is dropped unrun as it reaches its shard or when its turn comes,
//!   counted as discarded (`ShardStats::discarded`; hooks registered with
//!   [`RuntimeBuilder::on_discard`](crate::RuntimeBuilder::on_discard) see each one), and
//!   counted as handled, so shutdown does not wait for it. So the app's sources stop at
//!   their next turn, and nothing is re-created or replayed;
//! - no message of it activates an actor again; an active one is dropped, with whatever
//!   state it held, when it falls idle (`RuntimeBuilder::idle_deactivation`) or at
//!   shutdown, without calling its `deactivate`; so is the state its deactivated actors
//!   left;
//! - every other app goes on untouched, and the panicking shard keeps running.
//!
//! Hooks registered with [`RuntimeBuilder::on_handler_panic`](crate::RuntimeBuilder::on_handler_panic)
//! are called with every handler panic, so that a layer above can end its wait for the
//! app at once instead of waiting for output that will not come.
//!
//! `Failures::handler_panicked` is the failure path; a restore from the last checkpoint
//! replaces its body.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::envelope::{ActorId, AppId, ShardId};
use crate::stats::{bump, ShardCounters};

/// Why and where an app failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppFailure {
    /// The app.
    pub app: AppId,
    /// The actor whose handler panicked first.
    pub actor: ActorId,
    /// That panic's message (its `&str` or `String` payload; a placeholder for others).
    pub message: String,
    /// Handlers of the app that panicked: the first, and any that were running on other
    /// shards before they saw the failure.
    pub handler_panics: u64,
}

/// A hook called with each handler panic: the actor and the panic's message.
pub(crate) type PanicHook = Arc<dyn Fn(ActorId, &str) + Send + Sync>;

/// Which apps have failed: read by every shard for every message (one relaxed load),
/// written once per failure.
pub(crate) struct Failures {
    /// Per app: whether it failed.
    failed: Box<[AtomicBool]>,
    /// Per app: its failure, once it failed.
    records: Mutex<Vec<Option<AppFailure>>>,
    hooks: Vec<PanicHook>,
}

impl Failures {
    /// No app failed yet, out of `apps`; `hooks` hear of each handler panic.
    pub(crate) fn new(apps: usize, hooks: Vec<PanicHook>) -> Self {
        Self {
            failed: (0..apps).map(|_| AtomicBool::new(false)).collect(),
            records: Mutex::new(vec![None; apps]),
            hooks,
        }
    }

    /// Whether `app` has failed. An app without operators never does.
    #[inline]
    pub(crate) fn is_failed(&self, app: AppId) -> bool {
        self.failed
            .get(usize::from(app))
            .is_some_and(|failed| failed.load(Ordering::Relaxed))
    }

    /// Runs user code that changes an actor's state outside its handler (a lessee's
    /// `snapshot`, a lessor's `merge`). A panic there loses state just as a handler's
    /// does, so it fails the app the same way (counted in `handler_panics`) and
    /// `fallback` is answered; for an app that already failed the code is not run at all
    /// (its state may be half-updated) and `fallback` is answered.
    pub(crate) fn guard_state<T>(
        &self,
        actor: ActorId,
        counters: &ShardCounters,
        shard: ShardId,
        fallback: T,
        call: impl FnOnce() -> T,
    ) -> T {
        if self.is_failed(actor.app) {
            return fallback;
        }
        match catch_unwind(AssertUnwindSafe(call)) {
            Ok(value) => value,
            Err(payload) => {
                bump(&counters.handler_panics, 1);
                self.handler_panicked(actor, &*payload, shard);
                fallback
            }
        }
    }

    /// Whether any app has failed.
    #[inline]
    pub(crate) fn any(&self) -> bool {
        self.failed
            .iter()
            .any(|failed| failed.load(Ordering::Relaxed))
    }

    /// The failure of `app`, if it failed.
    pub(crate) fn get(&self, app: AppId) -> Option<AppFailure> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(usize::from(app))
            .cloned()
            .flatten()
    }

    /// The failure path: `actor`'s handler panicked with `payload` on `shard`. Fails its
    /// app (the first panic's message is kept), logs it, and tells the hooks.
    pub(crate) fn handler_panicked(
        &self,
        actor: ActorId,
        payload: &(dyn Any + Send),
        shard: ShardId,
    ) {
        let message = panic_message(payload);
        let first = {
            let mut records = self
                .records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let app = usize::from(actor.app);
            if records.len() <= app {
                records.resize(app + 1, None);
            }
            match &mut records[app] {
                Some(failure) => {
                    failure.handler_panics += 1;
                    false
                }
                slot @ None => {
                    *slot = Some(AppFailure {
                        app: actor.app,
                        actor,
                        message: message.clone(),
                        handler_panics: 1,
                    });
                    true
                }
            }
        };
        if let Some(failed) = self.failed.get(usize::from(actor.app)) {
            failed.store(true, Ordering::Relaxed);
        }
        if first {
            tracing::error!(
                actor = %actor,
                shard,
                app = actor.app,
                "handler panicked: {message}; app {} failed: its messages are discarded from now on",
                actor.app
            );
        } else {
            tracing::error!(actor = %actor, shard, "handler of failed app {} panicked too: {message}", actor.app);
        }
        for hook in &self.hooks {
            hook(actor, &message);
        }
    }
}

/// The text of a panic's payload: what `panic!` was given as a `&str` or a `String`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn the_first_panic_fails_the_app_and_later_ones_are_counted() {
        let heard = Arc::new(AtomicU64::new(0));
        let hook: PanicHook = {
            let heard = heard.clone();
            Arc::new(move |_, _| {
                heard.fetch_add(1, Ordering::Relaxed);
            })
        };
        let failures = Failures::new(2, vec![hook]);
        assert!(!failures.is_failed(1));
        let actor = ActorId::new(1, 3, 0);
        let first: Box<dyn Any + Send> = Box::new(format!("bad record {}", 7));
        failures.handler_panicked(actor, &*first, 0);
        let second: Box<dyn Any + Send> = Box::new("later");
        failures.handler_panicked(ActorId::new(1, 3, 1), &*second, 1);
        assert!(failures.is_failed(1));
        assert!(!failures.is_failed(0));
        assert!(
            !failures.is_failed(9),
            "an app without operators never fails"
        );
        assert_eq!(
            failures.get(1),
            Some(AppFailure {
                app: 1,
                actor,
                message: "bad record 7".into(),
                handler_panics: 2,
            })
        );
        assert_eq!(failures.get(0), None);
        assert_eq!(heard.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn payloads_without_text_get_a_placeholder() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u32), "a panic without a message");
    }
}
