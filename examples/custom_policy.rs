//! A scheduling policy of one's own: `AppFirst` gives every message of one app a deadline
//! at its ingress and every other message one a second later, and ranks ready actors by
//! deadline, so the chosen app's work runs first on every shard. It also counts the
//! messages it saw per app (`prepare_send` runs on the sender's shard for each one).
//!
//! `cargo run --release -p dirigo-examples --example custom_policy`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dirigo_operators::dataflow::{AppBuilder, Msg};
use dirigo_operators::sink::LatencyRecorder;
use dirigo_operators::source::Pacing;
use dirigo_runtime::scheduling::SchedulingPolicy;
use dirigo_runtime::{ActorId, AppId, Runtime, SchedContext};

/// Runs `first`'s messages before everyone else's.
pub struct AppFirst {
    /// The app that goes first.
    pub first: AppId,
    /// Messages seen per app (apps 0 and 1), shared with whoever reads them.
    pub seen: Arc<[AtomicU64; 2]>,
}

impl SchedulingPolicy for AppFirst {
    fn name(&self) -> &str {
        "app-first"
    }

    fn by_priority(&self) -> bool {
        true
    }

    fn priority(&self, message: &SchedContext) -> u64 {
        message.deadline
    }

    fn prepares_sends(&self) -> bool {
        true
    }

    fn prepare_send(&self, target: ActorId, message: &mut SchedContext) -> bool {
        if let Some(seen) = self.seen.get(usize::from(target.app)) {
            seen.fetch_add(1, Ordering::Relaxed);
        }
        message.deadline = if target.app == self.first {
            message.ingress
        } else {
            message.ingress + 1_000_000_000
        };
        true // shed nothing
    }
}

/// What a run found, per app: outputs, p99 latency (ns), and messages the policy saw.
pub struct Outcome {
    /// Per app.
    pub apps: Vec<(u64, u64, u64)>,
}

/// Two apps on one shard, each `records` records through a costly map; app 0 first.
pub fn run(records: u64) -> Outcome {
    let seen = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let policy = AppFirst {
        first: 0,
        seen: seen.clone(),
    };
    let apps: Vec<_> = (0..2u16)
        .map(|id| {
            let app = AppBuilder::new(id, &format!("app-{id}")).parallelism(1);
            let latency = LatencyRecorder::new();
            app.source("numbers", 0, Pacing::Rate(50_000.0), move |_, _| {
                (0..records).map(|i| (i / 50, i))
            })
            .map("busy", |n| {
                // About a microsecond of work per record.
                (0..200u64).fold(n, |acc, i| acc.wrapping_mul(31).wrapping_add(i))
            })
            .record_latency("out", &latency);
            (app.build(), latency)
        })
        .collect();
    let mut builder = Runtime::<Msg>::builder()
        .shards(1)
        .pinned(false)
        .policy(policy);
    for (app, _) in &apps {
        builder = app.install(builder);
    }
    let runtime = builder.build().expect("the runtime starts");
    for (app, _) in &apps {
        app.start(&runtime.ingress());
    }
    for (app, _) in &apps {
        assert!(app.wait(Duration::from_secs(120)), "the app finishes");
    }
    runtime.shutdown();
    Outcome {
        apps: apps
            .iter()
            .enumerate()
            .map(|(index, (_, latency))| {
                let histogram = latency.histogram();
                (
                    latency.outputs(),
                    histogram.value_at_quantile(0.99),
                    seen[index].load(Ordering::Relaxed),
                )
            })
            .collect(),
    }
}

fn main() {
    let outcome = run(100_000);
    for (app, (outputs, p99, seen)) in outcome.apps.iter().enumerate() {
        println!(
            "app-{app}: {outputs} outputs, p99 {:.3} ms, {seen} messages seen by the policy",
            *p99 as f64 / 1e6
        );
    }
}
