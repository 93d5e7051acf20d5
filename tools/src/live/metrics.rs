//! `/metrics`: the board in Prometheus' text format (version 0.0.4), encoded by
//! `prometheus-client` at each scrape. Names follow Prometheus' conventions: a `dirigo_`
//! prefix, `_total` on counters, seconds as the unit of time.
//!
//! Per shard (label `shard`): busy seconds, messages received and handled, parks, wakes,
//! ring-full events, messages queued now, slow handlers, shed messages. Per app (label
//! `app`): records in, records taken by the first operators, outputs (reached a sink,
//! written out, failed), dead letters, shed, late, discarded, busy and reserved seconds,
//! lessees, failed, the SLO, the share of outputs within it, and the latency histogram
//! (buckets counted from the app's HdrHistogram; the SLO is one of the bounds). Per
//! operator (labels `app`, `operator`): records received and sent on, lessees, and the
//! measured cost per message. With checkpoints on (no labels): completed, abandoned,
//! bytes written, restores, the newest complete and the resumed-from checkpoint, the
//! newest one's size and alignment time, the longest shard hold, and a histogram of
//! durations.
//!
//! A family is one entry in a table below (`shard_counters`, `app_counters`,
//! `operator_counts`, the checkpoints') or one `family` call: new counters go there.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use dirigo_operators::dataflow::App;

use super::{Board, BoardCheckpoints};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The board's metrics, as text.
pub fn render(board: &Arc<Board>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BoardCollector(board.clone())));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
    Ok(text)
}

struct BoardCollector(Arc<Board>);

impl std::fmt::Debug for BoardCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BoardCollector")
    }
}

/// One metric family: a name, its help, its type, and a value per label set.
fn family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
) -> Result<(), std::fmt::Error>
where
    V: Metric,
{
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in values {
        let family = metric.encode_family(&labels)?;
        value.encode_as(family)?;
    }
    Ok(())
}

/// One histogram's sample: `cumulative` counts at each bound, ascending (`+Inf` is
/// added), with the sum and count of every observation.
fn histogram(
    mut encoder: prometheus_client::encoding::MetricEncoder,
    (sum, count): (f64, u64),
    cumulative: &[(f64, u64)],
) -> Result<(), std::fmt::Error> {
    // `encode_histogram` takes per-bucket counts and adds them up itself.
    let mut previous = 0;
    let per_bucket: Vec<(f64, u64)> = cumulative
        .iter()
        .copied()
        .chain([(f64::INFINITY, count)])
        .map(|(bound, cumulative)| {
            let n = cumulative.saturating_sub(previous);
            previous = cumulative;
            (bound, n)
        })
        .collect();
    encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        sum,
        count,
        &per_bucket,
        None,
    )
}

/// The bounds of the checkpoint duration histogram, seconds.
const CHECKPOINT_BOUNDS_S: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// The checkpoints' families: counts, the last one's size and alignment, the longest
/// shard hold, and a histogram of durations.
fn encode_checkpoints(
    encoder: &mut DescriptorEncoder,
    checkpoints: &BoardCheckpoints,
) -> Result<(), std::fmt::Error> {
    use MetricType::{Counter, Gauge};
    let (counters, gauges, durations) = checkpoints.watch.read(|stats| {
        let seconds = |us: u64| us as f64 / 1e6;
        let counters = [
            (
                "dirigo_checkpoints_completed",
                "Checkpoints completed (manifest committed).",
                stats.completed as f64,
            ),
            (
                "dirigo_checkpoints_abandoned",
                "Checkpoints abandoned (timed out, or a part could not be archived or written).",
                stats.abandoned as f64,
            ),
            (
                "dirigo_checkpoint_written_bytes",
                "Bytes of state written by every completed checkpoint.",
                stats.bytes_total as f64,
            ),
            (
                "dirigo_checkpoint_restores",
                "Times this run restored every app from the last complete checkpoint after \
                 an app failed.",
                f64::from(checkpoints.restores),
            ),
        ];
        let gauges = [
            (
                "dirigo_checkpoint_last_complete_id",
                "The newest complete checkpoint (0: none yet).",
                stats.last_complete as f64,
            ),
            (
                "dirigo_checkpoint_resumed_from_id",
                "The checkpoint the run resumed from (0: it started from scratch).",
                stats.resumed_from.unwrap_or(0) as f64,
            ),
            (
                "dirigo_checkpoint_last_size_bytes",
                "Bytes of state in the newest complete checkpoint.",
                stats.bytes_last as f64,
            ),
            (
                "dirigo_checkpoint_last_alignment_seconds",
                "Of the newest complete checkpoint, start to its last part (barriers' travel \
                 and alignment).",
                stats.alignments_us.last().copied().map_or(0.0, seconds),
            ),
            (
                "dirigo_checkpoint_max_shard_hold_seconds",
                "The longest time archiving a partition's state held its shard.",
                seconds(stats.max_shard_hold_us),
            ),
        ];
        let mut cumulative: Vec<(f64, u64)> = CHECKPOINT_BOUNDS_S
            .iter()
            .map(|&bound| (bound, 0))
            .collect();
        let mut sum = 0.0;
        for &us in &stats.durations_us {
            let duration = seconds(us);
            sum += duration;
            for (bound, count) in &mut cumulative {
                if duration <= *bound {
                    *count += 1;
                }
            }
        }
        let durations = (sum, stats.durations_us.len() as u64, cumulative);
        (counters, gauges, durations)
    });
    let none = || Vec::<(&'static str, String)>::new();
    for (name, help, value) in counters {
        family(encoder, name, help, Counter, [(none(), Count(value))])?;
    }
    for (name, help, value) in gauges {
        family(encoder, name, help, Gauge, [(none(), Level(value))])?;
    }
    let (sum, count, cumulative) = durations;
    let mut duration = encoder.encode_descriptor(
        "dirigo_checkpoint_duration_seconds",
        "Duration of each completed checkpoint, from its start to its committed manifest.",
        None,
        MetricType::Histogram,
    )?;
    histogram(duration.encode_family(&none())?, (sum, count), &cumulative)
}

/// A value a family holds.
trait Metric {
    fn encode_as(
        self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error>;
}

/// A counter's value.
struct Count(f64);
/// A gauge's value.
struct Level(f64);

impl Metric for Count {
    fn encode_as(
        self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        ConstCounter::new(self.0).encode(encoder)
    }
}

impl Metric for Level {
    fn encode_as(
        self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        ConstGauge::new(self.0).encode(encoder)
    }
}

impl Collector for BoardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter, Gauge};
        let board = &self.0;
        let shards = board.shards.stats();
        let per_shard = |value: &dyn Fn(&dirigo_runtime::ShardStats) -> f64| {
            shards
                .iter()
                .map(|shard| (vec![("shard", shard.shard.to_string())], value(shard)))
                .collect::<Vec<_>>()
        };
        type ShardFamily = (
            &'static str,
            &'static str,
            fn(&dirigo_runtime::ShardStats) -> f64,
        );
        let shard_counters: [ShardFamily; 8] = [
            (
                "dirigo_shard_busy_seconds",
                "Seconds the shard spent running handlers and runtime work.",
                |s| s.busy_ns as f64 / 1e9,
            ),
            (
                "dirigo_shard_messages_received",
                "Messages that arrived at the shard.",
                |s| s.msgs_in as f64,
            ),
            (
                "dirigo_shard_messages_handled",
                "Messages the shard's handlers finished.",
                |s| s.handled as f64,
            ),
            (
                "dirigo_shard_parks",
                "Times the shard parked its thread.",
                |s| s.parks as f64,
            ),
            (
                "dirigo_shard_wakes",
                "Times the shard woke another, parked shard.",
                |s| s.wakes as f64,
            ),
            (
                "dirigo_shard_ring_full",
                "Times a ring towards another shard was found full.",
                |s| s.ring_full as f64,
            ),
            (
                "dirigo_shard_slow_handlers",
                "Handlers that held the shard past the handler bound.",
                |s| s.slow_handlers as f64,
            ),
            (
                "dirigo_shard_shed_messages",
                "Messages the scheduling policy dropped for missing their deadline.",
                |s| s.shed as f64,
            ),
        ];
        for (name, help, value) in shard_counters {
            let values = per_shard(&|shard| value(shard))
                .into_iter()
                .map(|(l, v)| (l, Count(v)));
            family(&mut encoder, name, help, Counter, values)?;
        }
        family(
            &mut encoder,
            "dirigo_shard_queued_messages",
            "Messages waiting in the shard's mailboxes (as of its last turn).",
            Gauge,
            per_shard(&|shard| shard.queued as f64)
                .into_iter()
                .map(|(l, v)| (l, Level(v))),
        )?;
        family(
            &mut encoder,
            "dirigo_shard_queued_messages_peak",
            "The most messages the shard's mailboxes held at once.",
            Gauge,
            per_shard(&|shard| shard.queued_peak as f64)
                .into_iter()
                .map(|(l, v)| (l, Level(v))),
        )?;

        let published = board.published().clone();
        let flows: Vec<_> = board.apps.iter().map(|app| app.app.flow()).collect();
        let app_label = |index: usize| vec![("app", board.apps[index].name.clone())];
        type AppFamily = (
            &'static str,
            &'static str,
            fn(&dirigo_operators::dataflow::Flow, &super::AppPublished) -> u64,
        );
        let app_counters: [AppFamily; 9] = [
            (
                "dirigo_app_events_in",
                "Records the app's sources emitted.",
                |f, _| f.emitted,
            ),
            (
                "dirigo_app_events_taken",
                "Records the operators right after the sources took in.",
                |f, _| f.ingested,
            ),
            (
                "dirigo_app_outputs",
                "Records that reached the app's sinks.",
                |_, p| p.outputs,
            ),
            (
                "dirigo_app_outputs_written",
                "Records the app's sinks wrote out (file, standard output, socket).",
                |f, _| f.outputs_written,
            ),
            (
                "dirigo_app_outputs_failed",
                "Records the app's sinks could not write out (lost).",
                |f, _| f.outputs_failed,
            ),
            (
                "dirigo_app_dead_letters",
                "Malformed records, sent to the dead-letter file.",
                |_, p| p.dead_letters,
            ),
            (
                "dirigo_app_shed",
                "Records the scheduler shed (on the way in and further in).",
                |f, _| f.shed_at_ingest + f.shed_downstream,
            ),
            (
                "dirigo_app_late",
                "Records dropped for coming after their window fired.",
                |f, _| f.late,
            ),
            (
                "dirigo_app_discarded",
                "Records dropped unrun because the app had failed.",
                |f, _| f.discarded_at_ingest + f.discarded_downstream,
            ),
        ];
        let none = super::AppPublished::default();
        for (name, help, value) in app_counters {
            let values = flows.iter().enumerate().map(|(index, flow)| {
                let published = published.apps.get(index).unwrap_or(&none);
                (app_label(index), Count(value(flow, published) as f64))
            });
            family(&mut encoder, name, help, Counter, values)?;
        }
        family(
            &mut encoder,
            "dirigo_app_lessees",
            "Lessees the app's actors hold.",
            Gauge,
            (0..board.apps.len()).map(|index| {
                let lessees = published.apps.get(index).map_or(0, |app| app.lessees);
                (app_label(index), Level(f64::from(lessees)))
            }),
        )?;
        let usage = board.shards.app_usage();
        let usage = &usage;
        let app_usage = |pick: fn(&dirigo_runtime::scheduling::AppUsage) -> u64| {
            (0..board.apps.len()).map(move |index| {
                let used = usage
                    .iter()
                    .find(|usage| usize::from(usage.app) == index)
                    .map_or(0, pick);
                (app_label(index), Count(used as f64 / 1e9))
            })
        };
        family(
            &mut encoder,
            "dirigo_app_busy_seconds",
            "Seconds the app's handlers ran (measured while costs are measured).",
            Counter,
            app_usage(|usage| usage.busy_ns),
        )?;
        family(
            &mut encoder,
            "dirigo_app_reserved_seconds",
            "Shard-seconds that hosted at least one of the app's actors, lessees included.",
            Counter,
            app_usage(|usage| usage.reserved_ns),
        )?;
        let operator_label = |index: usize, operator: usize| {
            let app = &board.apps[index];
            vec![
                ("app", app.name.clone()),
                (
                    "operator",
                    app.operators
                        .get(operator)
                        .cloned()
                        .unwrap_or_else(|| operator.to_string()),
                ),
            ]
        };
        family(
            &mut encoder,
            "dirigo_operator_lessees",
            "Lessees the operator's partitions hold.",
            Gauge,
            (0..board.apps.len()).flat_map(|index| {
                let held = published
                    .apps
                    .get(index)
                    .map(|app| app.operator_lessees.clone())
                    .unwrap_or_default();
                held.into_iter()
                    .enumerate()
                    .map(move |(operator, lessees)| {
                        (operator_label(index, operator), Level(f64::from(lessees)))
                    })
            }),
        )?;
        type OperatorCount = (&'static str, &'static str, fn(&App) -> Vec<(String, u64)>);
        let operator_counts: [OperatorCount; 2] = [
            (
                "dirigo_operator_records_in",
                "Records the operator's partitions received (sources receive none).",
                App::records_in,
            ),
            (
                "dirigo_operator_records_out",
                "Records the operator's partitions sent on (once each, however many edges \
                 took them); for a sink, records it wrote out of the process.",
                App::records_out,
            ),
        ];
        for (name, help, counts) in operator_counts {
            family(
                &mut encoder,
                name,
                help,
                Counter,
                board.apps.iter().enumerate().flat_map(|(index, app)| {
                    counts(&app.app)
                        .into_iter()
                        .enumerate()
                        .map(move |(operator, (_, records))| {
                            (operator_label(index, operator), Count(records as f64))
                        })
                }),
            )?;
        }
        let costs = board.shards.operator_costs();
        family(
            &mut encoder,
            "dirigo_operator_handler_seconds",
            "The operator's measured cost per message (smoothed; 0 until measured).",
            Gauge,
            costs
                .iter()
                .filter(|cost| usize::from(cost.app) < board.apps.len())
                .map(|cost| {
                    (
                        operator_label(usize::from(cost.app), usize::from(cost.operator)),
                        Level(cost.own_ns as f64 / 1e9),
                    )
                }),
        )?;
        family(
            &mut encoder,
            "dirigo_app_failed",
            "1 when a handler of the app panicked (the app failed), else 0.",
            Gauge,
            board.apps.iter().enumerate().map(|(index, app)| {
                let failed = app.app.failure().is_some();
                (app_label(index), Level(if failed { 1.0 } else { 0.0 }))
            }),
        )?;
        let with_slo: Vec<usize> = (0..board.apps.len())
            .filter(|&index| board.apps[index].slo.is_some())
            .collect();
        family(
            &mut encoder,
            "dirigo_app_slo_seconds",
            "The app's latency target.",
            Gauge,
            with_slo.iter().map(|&index| {
                let slo = board.apps[index].slo.unwrap_or_default();
                (app_label(index), Level(slo.as_secs_f64()))
            }),
        )?;
        family(
            &mut encoder,
            "dirigo_app_slo_satisfaction_ratio",
            "Share of the app's outputs so far within its SLO (1 before the first output).",
            Gauge,
            with_slo.iter().map(|&index| {
                let app = published.apps.get(index).unwrap_or(&none);
                let ratio = match (app.within_slo, app.buckets.count) {
                    (Some(within), count) if count > 0 => within as f64 / count as f64,
                    _ => 1.0,
                };
                (app_label(index), Level(ratio))
            }),
        )?;
        let mut latency = encoder.encode_descriptor(
            "dirigo_app_latency_seconds",
            "Latency of the app's outputs, from the intended send time of the input.",
            None,
            MetricType::Histogram,
        )?;
        for index in 0..board.apps.len() {
            let buckets = published
                .apps
                .get(index)
                .map(|app| app.buckets.clone())
                .unwrap_or_default();
            let labels = app_label(index);
            histogram(
                latency.encode_family(&labels)?,
                (buckets.sum_s, buckets.count),
                &buckets.cumulative,
            )?;
        }
        if let Some(checkpoints) = &board.checkpoints {
            encode_checkpoints(&mut encoder, checkpoints)?;
        }
        let mut run = encoder.encode_descriptor(
            "dirigo_run_elapsed_seconds",
            "Seconds since the sources started.",
            None,
            Gauge,
        )?;
        let elapsed = board.started.elapsed().map_or(0.0, |e| e.as_secs_f64());
        ConstGauge::new(elapsed).encode(run.encode_family(&Vec::<(&str, String)>::new())?)?;
        let mut info = encoder.encode_descriptor(
            "dirigo_build_info",
            "The dirigo version (always 1).",
            None,
            Gauge,
        )?;
        let version = vec![("version", env!("CARGO_PKG_VERSION").to_string())];
        ConstGauge::new(1i64).encode(info.encode_family(&version)?)?;
        Ok(())
    }
}
