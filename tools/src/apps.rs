//! Turns each checked `[[app]]` of a configuration into a dataflow: its source, its
//! operators (a chain or a tree, every leaf feeding the sink) or a NEXMark query, and a
//! latency recorder on every output.
//!
//! Configured operators read and write [`KeyedRecord`]s, so any kind can follow any
//! other: windowed kinds emit one record per key and window (`value` the aggregate,
//! `time` the window's start), `running_sum` one per key whenever its sum changed.
//!
//! Sums and counts (`window_sum`, `window_count`, `running_sum`) saturate at `u64::MAX`
//! instead of wrapping: an output of `18446744073709551615` means "this much or more".
//! Saturating rather than failing the key's window, because a saturated sum is still
//! the right answer to "did it pass a threshold?", because saturating addition of
//! unsigned values is associative and commutative (`min(a + b + c, MAX)` in any order),
//! so the result does not depend on how partial sums were split between lessees and
//! merged, and because it needs no error path in the per-record fold. What is never
//! emitted is a wrapped value: `u64::MAX - 1` plus 5 is `u64::MAX`, not 3.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dirigo_operators::dataflow::{App, AppBuilder, KeyedStream, Msg, Stream};
use dirigo_operators::io::nats::{NatsSourceHandle, NatsSourceOptions};
use dirigo_operators::io::tcp::Token;
use dirigo_operators::io::{
    DeadLetterSink, DeadLetters, Format, Framing, GeneratorSpec, KeyDist, KeyedRecord,
    LetterLimits, LoadShape, TcpSourceHandle, TcpSourceOptions,
};
use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
use dirigo_operators::nexmark::queries::Query;
use dirigo_operators::sink::{LatencyRecorder, LineTarget};
use dirigo_operators::source::Pacing;
use dirigo_runtime::{AppId, RuntimeBuilder};

use crate::config::{
    socket_address, AppSection, FormatName, FramingName, Input, OperatorKind, OperatorSection,
    RowOrder, SinkKind, SourceKind, SourceSection, StateName,
};

/// One app, built and ready to install.
pub struct BuiltApp {
    /// Its name.
    pub name: String,
    /// The dataflow.
    pub app: App,
    /// Every output's latency.
    pub latency: LatencyRecorder,
    /// Its SLO, if it has one.
    pub slo: Option<Duration>,
    /// Where a file or TCP source puts malformed records.
    pub dead_letters: Option<DeadLetterSink>,
    /// Its TCP sources' listeners, closed when the run ends.
    pub tcp: Vec<TcpSourceHandle>,
    /// Its NATS sources' readers, stopped when the run ends.
    pub nats: Vec<NatsSourceHandle>,
}

/// Builds app `id` from its section. `report_dir` is where dead letters go by default.
/// With `checkpointed`, the app's files take their output exactly once: JSON-lines
/// files through the checkpoints' commits, and dead letters appended to what an earlier
/// run left (a resumed run cuts them back to the checkpoint; a fresh one empties them,
/// see `run`).
pub fn build(
    id: AppId,
    section: &AppSection,
    base_dir: &Path,
    report_dir: &Path,
    checkpointed: bool,
) -> Result<BuiltApp, String> {
    if let Some(typed) = crate::rows::build(id, section, base_dir, report_dir, checkpointed)? {
        return Ok(typed);
    }
    let name = section.name.get_ref().clone();
    let mut builder = AppBuilder::new(id, &name);
    if let Some(parallelism) = &section.parallelism {
        builder = builder.parallelism(*parallelism.get_ref());
    }
    let default_source = SourceSection::default();
    let source = section
        .source()
        .map_or(&default_source, |source| source.get_ref());
    let mut latency = LatencyRecorder::new();
    let mut dead_letters = None;
    let mut tcp = Vec::new();
    let mut nats = Vec::new();
    if let Some(query) = &section.query {
        let events = nexmark_source(&builder, source);
        let query = Query::build(query.get_ref(), &events)
            .ok_or_else(|| format!("unknown query {:?}", query.get_ref()))?;
        if section.sink.kind == SinkKind::Latency {
            latency = query.record_latency("out");
        } else {
            // The rows of the query's output type, with its field names.
            let (rows, schema) = query.rows();
            rows.record_latency("out", &latency);
            let (positions, names) = crate::rows::sink_fields(&section.sink, &schema)?;
            crate::rows::sink_rows(
                &section.sink,
                &rows,
                (None, checkpointed),
                &positions,
                &names,
            )
            .map_err(|e| format!("app {name}: {e}"))?;
        }
    } else {
        let kind = source.kind_for(false);
        let records = match kind {
            SourceKind::Generator | SourceKind::Nexmark => generator_source(&builder, source),
            SourceKind::File | SourceKind::Tcp | SourceKind::Nats => {
                let letters_path = source.dead_letters.as_ref().map_or_else(
                    || report_dir.join(format!("{name}.dead-letters.jsonl")),
                    |path| path.get_ref().into(),
                );
                if let Some(parent) = letters_path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        format!("cannot create {} for dead letters: {e}", parent.display())
                    })?;
                }
                let mut limits = LetterLimits::default();
                if let Some(bytes) = &source.dead_letter_max_bytes {
                    limits.max_bytes = *bytes.get_ref();
                }
                if let Some(rate) = &source.dead_letter_max_per_s {
                    limits.max_per_s = *rate.get_ref();
                }
                let letters = if checkpointed {
                    DeadLetterSink::new(DeadLetters::appending_to(letters_path).with_limits(limits))
                } else {
                    DeadLetterSink::to_file_with_limits(letters_path, limits)
                };
                dead_letters = Some(letters.clone());
                let format = match source.format {
                    FormatName::Csv => Format::Csv,
                    FormatName::Json => Format::Json,
                };
                let bound = source.out_of_orderness_ms();
                if kind == SourceKind::Nats {
                    let options = nats_source_options(source, base_dir, format)?;
                    let (stream, handle) = builder
                        .source_nats(
                            "source",
                            options,
                            bound,
                            |record: &KeyedRecord| record.time,
                            letters,
                        )
                        .map_err(|e| format!("app {name}: {e}"))?;
                    nats.push(handle);
                    stream
                } else if kind == SourceKind::File {
                    let path = source.path.as_ref().ok_or("a file source needs a path")?;
                    builder
                        .source_file(
                            "source",
                            base_dir.join(path.get_ref()),
                            format,
                            bound,
                            |record: &KeyedRecord| record.time,
                            letters,
                        )
                        .map_err(|e| e.to_string())?
                } else {
                    let (address, options) = tcp_source_options(source, format)?;
                    let (stream, handle) = builder
                        .source_tcp(
                            "source",
                            address,
                            options,
                            bound,
                            |record: &KeyedRecord| record.time,
                            letters,
                        )
                        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
                    tcp.push(handle);
                    stream
                }
            }
        };
        let leaves = operators(&records, section);
        for (index, leaf) in leaves.iter().enumerate() {
            leaf.record_latency(&format!("latency-{index}"), &latency);
            match section.sink.kind {
                SinkKind::Latency => {}
                // The checks refuse a CSV sink of key/value records (`crate::rows`).
                SinkKind::Csv => {
                    return Err(format!(
                        "app {name}: a csv sink needs a source with a schema"
                    ))
                }
                SinkKind::JsonLines => {
                    let path = section.sink.path.as_ref().ok_or("a path for the sink")?;
                    let target = if path.get_ref() == "-" {
                        LineTarget::Stdout
                    } else {
                        // Several leaves write to one file each.
                        let file = if leaves.len() == 1 {
                            path.get_ref().clone()
                        } else {
                            format!("{}.{index}", path.get_ref())
                        };
                        if checkpointed {
                            LineTarget::Committed(file.into())
                        } else {
                            LineTarget::File(file.into())
                        }
                    };
                    leaf.sink_json_lines(&format!("sink-{index}"), target)
                        .map_err(|e| format!("app {name}: sink: {e}"))?;
                }
                SinkKind::Nats => {
                    let section = section
                        .sink
                        .nats
                        .as_ref()
                        .ok_or("a nats sink needs [app.sink.nats]")?;
                    let options = section.get_ref().sink_options(base_dir)?;
                    leaf.sink_nats(&format!("sink-{index}"), options)
                        .map_err(|e| format!("app {name}: {e}"))?;
                }
                SinkKind::Tcp => {
                    let connect = section.sink.connect.as_ref().ok_or("an address")?;
                    let address = socket_address(connect).map_err(|(_, message)| message)?;
                    let timeout = section
                        .sink
                        .write_timeout_ms
                        .as_ref()
                        .map_or(dirigo_operators::io::tcp::DEFAULT_WRITE_TIMEOUT, |ms| {
                            Duration::from_millis(*ms.get_ref())
                        });
                    leaf.sink_tcp_with_timeout(&format!("sink-{index}"), address, timeout)
                        .map_err(|e| format!("cannot connect the sink to {address}: {e}"))?;
                }
            }
        }
    }
    Ok(BuiltApp {
        name,
        app: builder.build(),
        latency,
        slo: section
            .slo_ms
            .as_ref()
            .map(|ms| Duration::from_secs_f64(*ms.get_ref() / 1e3)),
        dead_letters,
        tcp,
        nats,
    })
}

/// A `tcp` source's address and options (framing, frame and connection limits, idle
/// timeout, token), its lines in `format`: the same for keyed records and typed rows.
pub(crate) fn tcp_source_options(
    source: &SourceSection,
    format: Format,
) -> Result<(std::net::SocketAddr, TcpSourceOptions), String> {
    let listen = source
        .listen
        .as_ref()
        .ok_or("a tcp source needs an address")?;
    let address = socket_address(listen).map_err(|(_, message)| message)?;
    let framing = match source.framing {
        FramingName::Lines => Framing::Lines(format),
        FramingName::LengthPrefixed => Framing::LengthPrefixed,
    };
    let mut options = TcpSourceOptions::new(framing);
    if let Some(open) = &source.max_connections {
        options = options.max_open_connections(*open.get_ref());
    }
    if let Some(bytes) = &source.max_frame_bytes {
        options = options.max_frame(*bytes.get_ref());
    }
    if let Some(ms) = &source.idle_timeout_ms {
        options = options.idle_timeout(Duration::from_millis(*ms.get_ref()));
    }
    if let Some(token) = &source.token {
        options = options.token(Token::new(&token.get_ref().0));
    }
    Ok((address, options))
}

/// A `nats` source's options (`[app.source.nats]`, its partitions), its messages in
/// `format`: the same for keyed records and typed rows.
pub(crate) fn nats_source_options(
    source: &SourceSection,
    base_dir: &Path,
    format: Format,
) -> Result<NatsSourceOptions, String> {
    let section = source
        .nats
        .as_ref()
        .ok_or("a nats source needs [app.source.nats]")?;
    let mut options = section
        .get_ref()
        .source_options(base_dir, source.nats_partitions());
    options.format = format;
    Ok(options)
}

/// Installs every app into `runtime`, with its SLO.
pub fn install(apps: &[BuiltApp], mut runtime: RuntimeBuilder<Msg>) -> RuntimeBuilder<Msg> {
    for built in apps {
        runtime = built.app.install(runtime);
        if let Some(slo) = built.slo {
            runtime = runtime.app_slo(built.app.id(), slo);
        }
    }
    runtime
}

fn pacing_of(shape: Option<&LoadShape>, seed: u64) -> Pacing {
    match shape {
        Some(shape) => Pacing::Shape {
            shape: shape.clone(),
            seed,
        },
        None => Pacing::Unpaced,
    }
}

/// The synthetic keyed records of a `generator` source.
fn generator_source(builder: &AppBuilder, source: &SourceSection) -> Stream<KeyedRecord> {
    let paced = source.shape.as_ref().map(|shape| shape.get_ref().clone());
    let spec = GeneratorSpec {
        // Unpaced records still need event times: a million per second of event time.
        shape: paced
            .clone()
            .unwrap_or(LoadShape::Constant { rate: 1_000_000.0 }),
        keys: source
            .keys
            .as_ref()
            .map_or(KeyDist::Uniform { keys: 1000 }, |keys| {
                keys.get_ref().clone()
            }),
        events: source.events.as_ref().map(|events| *events.get_ref()),
        seed: source.seed.unwrap_or(1),
        base_time_ms: 0,
    };
    let pacing = if paced.is_some() {
        spec.pacing()
    } else {
        Pacing::Unpaced
    };
    let stream = builder.source(
        "source",
        source.out_of_orderness_ms(),
        pacing,
        move |partition, partitions| {
            // Each partition takes every `partitions`-th record of the one sequence, at
            // the time the shape gives it (the pacing follows the same schedule).
            spec.generator()
                .skip(partition as usize)
                .step_by(partitions.max(1) as usize)
                .map(|(_, record)| (record.time, record))
        },
    );
    match &source.partitions {
        Some(partitions) => stream.set_parallelism(*partitions.get_ref()),
        None => stream,
    }
}

/// NEXMark events for a `query` (and, as rows, for a typed app).
pub(crate) fn nexmark_source(builder: &AppBuilder, source: &SourceSection) -> Stream<Event> {
    nexmark_source_of(builder, "events", source, Some)
}

/// NEXMark events, each turned into a record by `record` as the source emits it.
pub(crate) fn nexmark_source_of<T: dirigo_operators::dataflow::Data>(
    builder: &AppBuilder,
    node: &str,
    source: &SourceSection,
    record: impl Fn(Event) -> Option<T> + Send + Sync + 'static,
) -> Stream<T> {
    let record = Arc::new(record);
    let events = source
        .events
        .as_ref()
        .map_or(usize::MAX, |events| *events.get_ref() as usize);
    let spec = NexmarkSpec {
        events,
        ..NexmarkSpec::default()
    };
    let pacing = pacing_of(
        source.shape.as_ref().map(|shape| shape.get_ref()),
        source.seed.unwrap_or(1),
    );
    let stream = builder.source(
        node,
        source.out_of_orderness_ms(),
        pacing,
        move |partition, partitions| {
            let record = record.clone();
            spec.partition_iter(partition, partitions)
                .filter_map(move |event| Some((event.time(), record(event)?)))
        },
    );
    match &source.partitions {
        Some(partitions) => stream.set_parallelism(*partitions.get_ref()),
        None => stream,
    }
}

/// Builds the operators in input order (parents first); returns the leaves. An operator
/// with several inputs reads their union.
fn operators(source: &Stream<KeyedRecord>, app: &AppSection) -> Vec<Stream<KeyedRecord>> {
    let sections = &app.operators;
    if sections.is_empty() {
        return vec![source.clone()];
    }
    let inputs: Vec<Vec<Input>> = (0..sections.len()).map(|i| app.inputs_of(i)).collect();
    let mut built: Vec<Option<Stream<KeyedRecord>>> = vec![None; sections.len()];
    // The checks made the inputs a DAG rooted at the source: repeat until all are built.
    while built.iter().any(Option::is_none) {
        let mut progress = false;
        for index in 0..sections.len() {
            if built[index].is_some() {
                continue;
            }
            let streams: Option<Vec<Stream<KeyedRecord>>> = inputs[index]
                .iter()
                .map(|input| match *input {
                    // A keyed app has one source.
                    Input::Source(_) => Some(source.clone()),
                    Input::Operator(parent) => built[parent].clone(),
                })
                .collect();
            let Some(streams) = streams else {
                continue;
            };
            let input = match streams.as_slice() {
                [one] => one.clone(),
                [first, rest @ ..] => {
                    let rest: Vec<&Stream<KeyedRecord>> = rest.iter().collect();
                    first.union(&union_name(&sections[index]), &rest)
                }
                [] => source.clone(),
            };
            built[index] = Some(operator(&input, &sections[index]));
            progress = true;
        }
        if !progress {
            // Only a cycle could stop progress, and the checks refuse cycles.
            debug_assert!(false, "operators in a cycle passed the checks");
            break;
        }
    }
    let read_from: Vec<bool> = (0..sections.len())
        .map(|index| inputs.iter().any(|of| of.contains(&Input::Operator(index))))
        .collect();
    built
        .into_iter()
        .zip(read_from)
        .filter(|(_, read)| !read)
        .filter_map(|(stream, _)| stream)
        .collect()
}

/// Spins for about `ns` nanoseconds: the CPU a costly per-record function would take.
fn spend(ns: u64) {
    if ns == 0 {
        return;
    }
    let started = std::time::Instant::now();
    let budget = Duration::from_nanos(ns);
    while started.elapsed() < budget {
        std::hint::spin_loop();
    }
}

/// A windowed operator whose per-key aggregate is one `u64`: `fold(acc, value)` adds a
/// record, `merge` combines two partial aggregates; one output per key and window.
fn windowed(
    keyed: &KeyedStream<KeyedRecord, u64>,
    section: &OperatorSection,
    fold: fn(&mut u64, u64),
    merge: fn(&mut u64, u64),
) -> Stream<KeyedRecord> {
    let work_ns = section.work_ns.as_ref().map_or(0, |ns| *ns.get_ref());
    let mut spec = section.window.as_ref().expect("checked").get_ref().spec();
    spec.any_order = section
        .row_order
        .as_ref()
        .is_some_and(|order| *order.get_ref() == RowOrder::Any);
    keyed.window(
        section.name.get_ref(),
        spec,
        || 0u64,
        move |acc, _, _, record| {
            spend(work_ns);
            fold(acc, record.value);
        },
        merge,
        |key, window, value, out| {
            out.push(KeyedRecord {
                key: *key,
                value,
                time: window.start,
            })
        },
    )
}

/// The name of the node that merges `section`'s inputs: its own for a `union`, which is
/// nothing more.
pub(crate) fn union_name(section: &OperatorSection) -> String {
    let name = section.name.get_ref();
    if *section.kind.get_ref() == OperatorKind::Union {
        name.clone()
    } else {
        format!("{name}-inputs")
    }
}

/// Panics `panic_on_value` caused in this process, against `panic_times`.
static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn operator(input: &Stream<KeyedRecord>, section: &OperatorSection) -> Stream<KeyedRecord> {
    let name = section.name.get_ref().as_str();
    let work_ns = section.work_ns.as_ref().map_or(0, |ns| *ns.get_ref());
    let keyed = input.key_by(|record: &KeyedRecord| record.key);
    let stream = match *section.kind.get_ref() {
        OperatorKind::Map => {
            let panic_on = section
                .panic_on_value
                .as_ref()
                .map(|value| *value.get_ref());
            let panic_times = section
                .panic_times
                .as_ref()
                .map_or(u64::MAX, |times| *times.get_ref());
            input.map(name, move |record| {
                spend(work_ns);
                if panic_on == Some(record.value)
                    && PANICS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < panic_times
                {
                    panic!("`panic_on_value = {}` met key {}", record.value, record.key);
                }
                record
            })
        }
        OperatorKind::Filter => {
            let keep = section
                .keep_percent
                .as_ref()
                .map_or(100, |percent| *percent.get_ref());
            input.filter(name, move |record| {
                spend(work_ns);
                record.value % 100 < keep
            })
        }
        // Sums and counts saturate at `u64::MAX` (see the module doc): never a wrapped,
        // small value.
        OperatorKind::WindowCount => windowed(
            &keyed,
            section,
            |count, _| *count = count.saturating_add(1),
            |a, b| *a = a.saturating_add(b),
        ),
        OperatorKind::WindowSum => windowed(
            &keyed,
            section,
            |sum, value| *sum = sum.saturating_add(value),
            |a, b| *a = a.saturating_add(b),
        ),
        OperatorKind::WindowMax => windowed(
            &keyed,
            section,
            |max, value| *max = (*max).max(value),
            |a, b| *a = (*a).max(b),
        ),
        // `operators` made the union of the inputs.
        OperatorKind::Union => input.clone(),
        // The checks refuse typed kinds over key/value records (`crate::rows`).
        OperatorKind::Select
        | OperatorKind::Key
        | OperatorKind::Window
        | OperatorKind::Aggregate
        | OperatorKind::Top
        | OperatorKind::Join => {
            debug_assert!(
                false,
                "a typed operator kind passed the checks without a schema"
            );
            input.clone()
        }
        OperatorKind::RunningSum => keyed.aggregate(
            name,
            || (0u64, 0u64),
            move |(sum, latest), time, record| {
                spend(work_ns);
                *sum = sum.saturating_add(record.value);
                *latest = (*latest).max(time);
            },
            |(sum, latest), (other_sum, other_latest)| {
                *sum = sum.saturating_add(other_sum);
                *latest = (*latest).max(other_latest);
            },
            |key, &(sum, latest)| KeyedRecord {
                key: *key,
                value: sum,
                time: latest,
            },
        ),
    };
    let stream = match &section.parallelism {
        Some(partitions) => stream.set_parallelism(*partitions.get_ref()),
        None => stream,
    };
    match section.state.as_ref().map(|state| *state.get_ref()) {
        Some(StateName::Exclusive) => stream.exclusive(),
        _ => stream,
    }
}
