//! Checkpoints against a sequential model: random inputs, random checkpoint intervals,
//! random scale events (lessees added and retired while the run goes on), and a restore
//! from a random complete checkpoint. Both the uninterrupted run and the restored one
//! must commit exactly the output a sequential fold of the input gives: nothing lost,
//! nothing twice.
//!
//! The window operator is keyed, mergeable and leased; the source is split over two
//! partitions; the sink commits through the checkpoints. Event times never go back
//! within a source partition, so no record is late and the output does not depend on
//! when watermarks travel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dirigo_operators::checkpoint::{CheckpointConfig, Checkpoints};
use dirigo_operators::dataflow::{App, AppBuilder, Msg};
use dirigo_operators::sink::LineTarget;
use dirigo_operators::source::Pacing;
use dirigo_operators::window::Windows;
use dirigo_runtime::{ActorId, Runtime};
use proptest::prelude::*;

/// The app: `(time, (key, value))` records, summed per key in tumbling windows of
/// `size` ms, written as `[key, window end, sum]` lines.
fn app(records: &[(u64, (u64, u64))], size: u64, out: &Path) -> App {
    let builder = AppBuilder::new(0, "sums").parallelism(2);
    builder
        .source_iter("records", records.to_vec(), 0, Pacing::Unpaced)
        .key_by(|(key, _): &(u64, u64)| *key)
        .window(
            "per-key",
            Windows::Tumbling { size },
            || 0u64,
            |sum, _, _, (_, value): &(u64, u64)| *sum += value,
            |sum, other| *sum += other,
            |key, window, sum, out| out.push((*key, window.end, sum)),
        )
        .sink_json_lines("out", LineTarget::Committed(out.to_path_buf()))
        .unwrap();
    builder.build()
}

/// What a sequential fold gives: one sorted line per key and window.
fn model(records: &[(u64, (u64, u64))], size: u64) -> Vec<String> {
    let mut sums: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for &(time, (key, value)) in records {
        let end = (time / size + 1) * size;
        *sums.entry((key, end)).or_default() += value;
    }
    let mut lines: Vec<String> = sums
        .into_iter()
        .map(|((key, end), sum)| format!("[{key},{end},{sum}]"))
        .collect();
    lines.sort();
    lines
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// A scale event: after `after_us`, add (or retire) the lessee of window partition
/// `partition` on the other shard.
#[derive(Clone, Debug)]
struct Scale {
    after_us: u64,
    partition: u32,
    add: bool,
}

/// Runs the app to its end with checkpoints every `interval_us`, applying `scales`;
/// returns the checkpoint it resumed from.
fn run(
    records: &[(u64, (u64, u64))],
    size: u64,
    dir: &Path,
    interval_us: u64,
    scales: &[Scale],
) -> Option<u64> {
    let out = dir.join("out.jsonl");
    let app = app(records, size, &out);
    let mut config = CheckpointConfig::new(dir.join("state"));
    config.interval = Duration::from_micros(interval_us);
    config.retain = 10_000;
    config.timeout = Duration::from_secs(20);
    let checkpoints = Checkpoints::new(config);
    checkpoints.attach(&app);
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .unwrap();
    let recovery = checkpoints.recover(false).unwrap();
    checkpoints.start(runtime.ingress());
    let ingress = runtime.ingress();
    app.start(&ingress);
    let started = std::time::Instant::now();
    for scale in scales {
        let at = Duration::from_micros(scale.after_us);
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        // The window operator is operator 1; its partitions' other shard is a lessee's.
        let actor = ActorId::new(0, 1, scale.partition);
        let other = 1 - ingress.home_shard(actor);
        let _ = if scale.add {
            ingress.add_lessee(actor, other)
        } else {
            ingress.remove_lessee(actor, other)
        };
    }
    assert!(app.wait(Duration::from_secs(30)), "the app did not end");
    let stats = checkpoints.finish(true);
    runtime.shutdown();
    assert!(stats.completed >= 1, "{stats:?}");
    recovery.resumed_from
}

/// The complete checkpoints in `dir`, oldest first.
fn complete(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = dirigo_operators::checkpoint::list(&dir.join("state"))
        .unwrap()
        .into_iter()
        .filter(|info| info.complete.is_ok())
        .map(|info| info.id)
        .collect();
    ids.sort_unstable();
    ids
}

fn scratch(case: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-chk-prop-{}-{case}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cases() -> u32 {
    std::env::var("DIRIGO_CHECKPOINT_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(1_000)
}

static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn a_restore_from_any_complete_checkpoint_equals_a_sequential_run(
        values in prop::collection::vec((0u64..12, 0u64..100), 1..600),
        size in 2u64..40,
        interval_us in 200u64..3_000,
        scales in prop::collection::vec(
            (0u64..4_000, 0u32..2, any::<bool>()).prop_map(|(after_us, partition, add)| Scale { after_us, partition, add }),
            0..4,
        ),
        pick in any::<prop::sample::Index>(),
    ) {
        // Record `i` at time `i / 4`: never back in time within a partition.
        let records: Vec<(u64, (u64, u64))> = values
            .iter()
            .enumerate()
            .map(|(i, &kv)| (i as u64 / 4, kv))
            .collect();
        let mut scales = scales;
        scales.sort_by_key(|scale| scale.after_us);
        let want = model(&records, size);
        let dir = scratch(CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed));

        prop_assert_eq!(run(&records, size, &dir, interval_us, &scales), None);
        prop_assert_eq!(&sorted_lines(&dir.join("out.jsonl")), &want, "uninterrupted");

        // Back to a random complete checkpoint: the newer ones go, as if the run had
        // stopped just after it.
        let ids = complete(&dir);
        prop_assert!(!ids.is_empty());
        let chosen = ids[pick.index(ids.len())];
        for &id in ids.iter().filter(|&&id| id > chosen) {
            std::fs::remove_dir_all(dirigo_operators::checkpoint::store::checkpoint_dir(&dir.join("state"), id)).unwrap();
        }
        prop_assert_eq!(run(&records, size, &dir, interval_us, &scales), Some(chosen));
        prop_assert_eq!(&sorted_lines(&dir.join("out.jsonl")), &want, "restored from {}", chosen);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// NEXMark q5 (two sliding windows, leased) with checkpoints every few milliseconds, then
/// restored from several of its complete checkpoints in turn: each restored run commits
/// exactly the uninterrupted run's output.
#[test]
fn nexmark_q5_restored_from_its_checkpoints_commits_the_same_output() {
    use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
    use dirigo_operators::nexmark::queries::q5;
    use std::sync::Arc;

    let events: Arc<Vec<(u64, Event)>> = Arc::new(
        NexmarkSpec {
            events: 200_000,
            ..NexmarkSpec::default()
        }
        .iter()
        .map(|event| (event.time(), event))
        .collect(),
    );
    let dir = scratch(1_000_000 + u64::from(std::process::id() % 1000));
    let out = dir.join("q5.jsonl");
    let run_q5 = |interval: Duration| {
        let builder = AppBuilder::new(0, "q5").parallelism(2);
        let source = builder.source_iter("events", events.clone(), 0, Pacing::Unpaced);
        q5(&source)
            .map("row", |row| format!("{row:?}"))
            .sink_json_lines("out", LineTarget::Committed(out.clone()))
            .unwrap();
        let app = builder.build();
        let mut config = CheckpointConfig::new(dir.join("state"));
        config.interval = interval;
        config.retain = 10_000;
        let checkpoints = Checkpoints::new(config);
        checkpoints.attach(&app);
        let runtime = app
            .install(Runtime::<Msg>::builder().shards(2))
            .build()
            .unwrap();
        let recovery = checkpoints.recover(false).unwrap();
        checkpoints.start(runtime.ingress());
        app.start(&runtime.ingress());
        assert!(app.wait(Duration::from_secs(60)));
        checkpoints.finish(true);
        runtime.shutdown();
        recovery.resumed_from
    };
    assert_eq!(run_q5(Duration::from_millis(2)), None);
    let want = sorted_lines(&out);
    assert!(want.len() >= 5, "{} rows", want.len());
    let ids = complete(&dir);
    assert!(ids.len() >= 3, "{ids:?}");
    // From the newest down: each restore deletes the checkpoints after the one it uses.
    let picks = [ids[ids.len() - 2], ids[ids.len() / 2], ids[0]];
    for chosen in picks {
        for &id in complete(&dir).iter().filter(|&&id| id > chosen) {
            std::fs::remove_dir_all(dirigo_operators::checkpoint::store::checkpoint_dir(
                &dir.join("state"),
                id,
            ))
            .unwrap();
        }
        assert_eq!(run_q5(Duration::from_secs(3_600)), Some(chosen));
        assert_eq!(sorted_lines(&out), want, "restored from {chosen}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
