//! Building a planned typed app: the file source of rows, its operators, and a sink per
//! leaf (JSON lines or CSV of the chosen fields, or TCP JSON lines), with every
//! output's latency recorded; and inferring a schema from a file's first record.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dirigo_operators::dataflow::{App, AppBuilder, Stream, Time};
use dirigo_operators::io::nats::NatsSourceHandle;
use dirigo_operators::io::{DeadLetterSink, DeadLetters, Format, LetterLimits, TcpSourceHandle};
use dirigo_operators::nexmark::events::Event;
use dirigo_operators::sink::{LatencyRecorder, LineTarget};
use dirigo_operators::source::Pacing;
use dirigo_operators::typed::aggregate::{AggregateKind, Aggregates};
use dirigo_operators::typed::connector::RowDecoding;
use dirigo_operators::typed::extreme::RowExtremeJoin;
use dirigo_operators::typed::join::RowJoin;
use dirigo_operators::typed::nexmark::EventFields;
use dirigo_operators::typed::ops::{RowErrors, RowTop, RowWindow};
use dirigo_operators::typed::output::NamedRow;
use dirigo_operators::typed::running::RowAggregate;
use dirigo_operators::typed::source::{LateRows, RowFile};
use dirigo_operators::typed::{Expr, Row, Schema, Type};
use dirigo_runtime::AppId;

use super::plan::{plan, Plan, PlannedSource, Step};
use crate::apps::BuiltApp;
use crate::config::{
    socket_address, AppSection, FormatName, Input, LateName, OperatorSection, SinkKind,
    SinkSection, SourceKind, SourceSection,
};

/// Builds app `id` if it is typed (`None` otherwise). `report_dir` is where its dead
/// letters go by default. With `checkpointed`, its JSON-lines file takes its output
/// through the checkpoints' commits (exactly once; a CSV file cannot yet, and the
/// configuration's check refuses it with checkpoints). Its dead letters need nothing more: a resumed run reads its file again from
/// the start up to the checkpoint, lettering the same lines again into an emptied file.
pub fn build(
    id: AppId,
    section: &AppSection,
    base_dir: &Path,
    report_dir: &Path,
    checkpointed: bool,
) -> Result<Option<BuiltApp>, String> {
    let name = section.name.get_ref().clone();
    let Some(plan) = plan(section, base_dir).map_err(|e| format!("app {name}: {}", e.message()))?
    else {
        return Ok(None);
    };
    let source = section
        .source()
        .expect("a typed app has a source")
        .get_ref();
    let mut builder = AppBuilder::new(id, &name);
    if let Some(parallelism) = &section.parallelism {
        builder = builder.parallelism(*parallelism.get_ref());
    }
    // The app's one dead-letter file is set on its first source.
    let letters_path = source.dead_letters.as_ref().map_or_else(
        || report_dir.join(format!("{name}.dead-letters.jsonl")),
        |path| path.get_ref().into(),
    );
    if let Some(parent) = letters_path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {} for dead letters: {e}", parent.display()))?;
    }
    let mut limits = LetterLimits::default();
    if let Some(bytes) = &source.dead_letter_max_bytes {
        limits.max_bytes = *bytes.get_ref();
    }
    if let Some(rate) = &source.dead_letter_max_per_s {
        limits.max_per_s = *rate.get_ref();
    }
    // A resumed run's letters follow those of the run before it when a source cannot
    // read its input again (tcp, nats), as for keyed records; files letter their lines
    // again into an emptied file. An app that mixes them appends (its file sources'
    // letters are then at least once across a restore).
    let replays_nothing = section.sources.iter().any(|source| {
        matches!(
            source.get_ref().kind,
            Some(SourceKind::Tcp | SourceKind::Nats)
        )
    });
    let letters = if checkpointed && replays_nothing {
        DeadLetterSink::new(DeadLetters::appending_to(letters_path).with_limits(limits))
    } else {
        DeadLetterSink::to_file_with_limits(letters_path, limits)
    };
    let mut pushed = Vec::new();
    let mut rows = Vec::with_capacity(section.sources.len());
    let (mut tcp, mut nats) = (Vec::new(), Vec::new());
    for (index, source) in section.sources.iter().enumerate() {
        let source = source.get_ref();
        // One source keeps its usual name in reports; several are told apart.
        let nexmark = source.kind_for(false) == SourceKind::Nexmark;
        let node = match (section.sources.len(), nexmark) {
            (1, true) => "events",
            (1, false) => "source",
            _ => section.source_name(index),
        };
        let planned = &plan.sources[index];
        let stream = if let Some(connected) =
            connector_rows(&builder, node, source, planned, base_dir, &letters)?
        {
            match connected {
                Connected::Tcp(stream, handle) => {
                    tcp.push(handle);
                    stream
                }
                Connected::Nats(stream, handle) => {
                    nats.push(handle);
                    stream
                }
            }
        } else if nexmark {
            // A paced source paces events: it must give each its row.
            let (fields, filters) = if section.sources.len() == 1 {
                event_fields(&plan, source.shape.is_none())
            } else {
                (EventFields::all(), Vec::new())
            };
            pushed = filters;
            crate::apps::nexmark_source_of(&builder, node, source, move |event| {
                fields.keeps(&event).then(|| fields.row(event))
            })
        } else {
            file_rows(&builder, node, source, planned, base_dir, &letters)?
        };
        rows.push(stream);
    }
    let latency = operators(section, &plan, &rows, &letters, Some(checkpointed), &pushed)?;
    Ok(Some(BuiltApp {
        name,
        app: builder.build(),
        latency,
        slo: section
            .slo_ms
            .as_ref()
            .map(|ms| Duration::from_secs_f64(*ms.get_ref() / 1e3)),
        dead_letters: Some(letters),
        tcp,
        nats,
    }))
}

/// The rows of a typed `file` source, read by node `node`.
fn file_rows(
    builder: &AppBuilder,
    node: &str,
    source: &SourceSection,
    planned: &PlannedSource,
    base_dir: &Path,
    letters: &DeadLetterSink,
) -> Result<Stream<Row>, String> {
    let path = source.path.as_ref().ok_or("a file source needs a path")?;
    builder
        .source_rows(
            node,
            RowFile {
                path: base_dir.join(path.get_ref()),
                format: match source.format {
                    FormatName::Csv => Format::Csv,
                    FormatName::Json => Format::Json,
                },
                schema: planned.schema.clone(),
                time_field: planned.time_field,
                out_of_orderness: source.out_of_orderness_ms(),
                late: match source.late.as_ref().map(|late| *late.get_ref()) {
                    Some(LateName::DeadLetter) => LateRows::DeadLetter,
                    Some(LateName::Drop) | None => LateRows::Pass,
                },
            },
            letters.clone(),
        )
        .map_err(|e| e.to_string())
}

/// A typed source that reads a connector: its rows and the handle that stops it and
/// reports what it did.
enum Connected {
    Tcp(Stream<Row>, TcpSourceHandle),
    Nats(Stream<Row>, NatsSourceHandle),
}

/// A `tcp` or `nats` source of typed rows, read by node `node` (`None` for other kinds):
/// the keyed sources' options and bounds, each line, frame or message decoded into a
/// row of the source's planned schema, timed by its event-time field, late rows as
/// `late` says.
fn connector_rows(
    builder: &AppBuilder,
    node: &str,
    source: &SourceSection,
    planned: &PlannedSource,
    base_dir: &Path,
    letters: &DeadLetterSink,
) -> Result<Option<Connected>, String> {
    let format = match source.format {
        FormatName::Csv => Format::Csv,
        FormatName::Json => Format::Json,
    };
    let rows = RowDecoding {
        schema: planned.schema.clone(),
        time_field: planned.time_field,
        out_of_orderness: source.out_of_orderness_ms(),
        late: match source.late.as_ref().map(|late| *late.get_ref()) {
            Some(LateName::DeadLetter) => LateRows::DeadLetter,
            Some(LateName::Drop) | None => LateRows::Pass,
        },
    };
    match source.kind_for(false) {
        SourceKind::Tcp => {
            let (address, options) = crate::apps::tcp_source_options(source, format)?;
            let (stream, handle) = builder
                .source_tcp_rows(node, address, options, rows, letters.clone())
                .map_err(|e| format!("cannot listen on {address}: {e}"))?;
            Ok(Some(Connected::Tcp(stream, handle)))
        }
        SourceKind::Nats => {
            let options = crate::apps::nats_source_options(source, base_dir, format)?;
            let (stream, handle) = builder
                .source_nats_rows(node, options, rows, letters.clone())
                .map_err(|e| e.to_string())?;
            Ok(Some(Connected::Nats(stream, handle)))
        }
        SourceKind::File | SourceKind::Nexmark | SourceKind::Generator => Ok(None),
    }
}

/// A typed app over NEXMark events, for `dirigo bench nexmark --toml`: `section`'s
/// operators over the rows of `events` (generated beforehand, as the built-in queries'
/// bench reads them), each leaf ending in the returned latency recorder instead of the
/// app's sink. Dead letters go to `letters`.
pub fn build_over_events(
    section: &AppSection,
    base_dir: &Path,
    events: Arc<Vec<(Time, Event)>>,
    letters: DeadLetterSink,
) -> Result<(App, LatencyRecorder), String> {
    let name = section.name.get_ref().clone();
    let plan = plan(section, base_dir)
        .map_err(|e| format!("app {name}: {}", e.message()))?
        .ok_or_else(|| format!("app {name}: not a pipeline of typed rows"))?;
    if !matches!(section.sources.as_slice(), [source] if source.get_ref().kind_for(false) == SourceKind::Nexmark)
    {
        return Err(format!(
            "app {name}: one `nexmark` source, to compare with a built-in query"
        ));
    }
    let builder = AppBuilder::new(0, &name);
    let builder = match &section.parallelism {
        Some(parallelism) => builder.parallelism(*parallelism.get_ref()),
        None => builder,
    };
    let (fields, pushed) = event_fields(&plan, true);
    let fields = Arc::new(fields);
    let rows = builder.source(
        "events",
        0,
        Pacing::Unpaced,
        move |partition, partitions| {
            let (events, fields) = (events.clone(), fields.clone());
            (partition as usize..events.len())
                .step_by(partitions.max(1) as usize)
                .filter_map(move |at| {
                    let (time, event) = &events[at];
                    fields.keeps(event).then(|| (*time, fields.row_of(event)))
                })
        },
    );
    let latency = operators(section, &plan, &[rows], &letters, None, &pushed)?;
    Ok((builder.build(), latency))
}

/// The fields a NEXMark source of `plan` turns events into, and the filters it does the
/// work of: with `unpaced`, only the events of the kind that [`Plan::event_kind`]'s
/// filters keep become rows, and those filters pass every row on.
fn event_fields(plan: &Plan, unpaced: bool) -> (EventFields, Vec<usize>) {
    let fields = plan.event_fields.clone().unwrap_or_else(EventFields::all);
    match &plan.event_kind {
        Some((kind, filters)) if unpaced => match fields.clone().only(kind) {
            Some(only) => (only, filters.clone()),
            None => (fields, Vec::new()),
        },
        _ => (fields, Vec::new()),
    }
}

/// Builds `section`'s operators (planned as `plan`) over its sources' `rows`; each leaf records its
/// outputs' latency in the returned recorder and, with `sinks`, ends in the app's sink
/// (committed by the checkpoints when `sinks` is `Some(true)`). The filters in `pushed`
/// pass their rows on: the source did their work.
fn operators(
    section: &AppSection,
    plan: &Plan,
    rows: &[Stream<Row>],
    letters: &DeadLetterSink,
    sinks: Option<bool>,
    pushed: &[usize],
) -> Result<LatencyRecorder, String> {
    let name = section.name.get_ref();
    let mut built: Vec<Option<Stream<Row>>> = vec![None; section.operators.len()];
    let extremes: Vec<Option<Extreme>> = (0..section.operators.len())
        .map(|index| extreme_join(section, plan, index))
        .collect();
    for &index in &plan.order {
        let operator = &section.operators[index];
        // A window whose only reader joins it back with its own input as an extreme
        // is not built: that join computes it.
        if extremes.iter().flatten().any(|e| e.right == index)
            && (0..section.operators.len())
                .filter(|&o| section.inputs_of(o).contains(&Input::Operator(index)))
                .all(|o| extremes[o].is_some())
        {
            continue;
        }
        let op_name = operator.name.get_ref().as_str();
        let inputs: Vec<Stream<Row>> = section
            .inputs_of(index)
            .into_iter()
            .map(|input| match input {
                Input::Source(at) => Some(rows[at].clone()),
                // A window an extreme join computes itself is not built: any stream
                // stands in for it, the join reads its left input alone.
                Input::Operator(parent) if extremes[index].is_some() => {
                    Some(built[parent].clone().unwrap_or_else(|| rows[0].clone()))
                }
                Input::Operator(parent) => built[parent].clone(),
            })
            .collect::<Option<Vec<_>>>()
            .expect("inputs come first");
        let input = match inputs.as_slice() {
            // A join reads its inputs apart.
            [left, _] if matches!(plan.steps[index].0, Step::Join { .. }) => left.clone(),
            [one] => one.clone(),
            [first, rest @ ..] => {
                let rest: Vec<&Stream<Row>> = rest.iter().collect();
                first.union(&crate::apps::union_name(operator), &rest)
            }
            [] => rows[0].clone(),
        };
        let errors = RowErrors::new(letters.clone(), op_name);
        let stream = match &plan.steps[index].0 {
            Step::Filter(_) if pushed.contains(&index) => input,
            Step::Filter(condition) => {
                let cleared = plan.cleared.get(index).cloned().unwrap_or_default();
                input.filter_rows(op_name, condition.compile_condition(), cleared, errors)
            }
            Step::Select(fields) => input.select_rows(
                op_name,
                fields.iter().map(|f| f.compile()).collect(),
                errors,
            ),
            Step::Key | Step::Union => input,
            Step::Top {
                spec,
                key,
                order,
                k,
            } => {
                let top = RowTop {
                    spec: *spec,
                    key: key.clone(),
                    order: order.compile(),
                    k: *k,
                };
                input.top_rows(op_name, top, errors)
            }
            Step::Join {
                spec,
                keys,
                condition,
                fields,
            } => {
                if let Some(extreme) = &extremes[index] {
                    let join = RowExtremeJoin {
                        spec: *spec,
                        column: extreme.column,
                        greatest: extreme.greatest,
                        condition: condition.as_ref().map(Expr::compile_condition),
                        fields: fields
                            .as_ref()
                            .map(|fields| fields.iter().map(Expr::compile).collect()),
                    };
                    let stream = inputs[0].join_extreme_rows(op_name, join, errors);
                    built[index] = Some(placed(stream, operator));
                    continue;
                }
                let join = RowJoin {
                    spec: *spec,
                    left_key: keys.left.iter().map(Expr::compile).collect(),
                    right_key: keys.right.iter().map(Expr::compile).collect(),
                    condition: condition.as_ref().map(Expr::compile_condition),
                    fields: fields
                        .as_ref()
                        .map(|fields| fields.iter().map(Expr::compile).collect()),
                };
                let stream = inputs[0].join_rows(&inputs[1], op_name, join, errors);
                placed(stream, operator)
            }
            Step::Window {
                spec,
                key,
                aggregates,
                having,
            } => {
                let window = RowWindow {
                    spec: *spec,
                    key: key.clone(),
                    aggregates: Aggregates::new(aggregates),
                    having: having.as_ref().map(|h| h.compile_condition()),
                };
                placed(input.window_rows(op_name, window, errors), operator)
            }
            Step::Aggregate {
                key,
                aggregates,
                having,
            } => {
                let aggregate = RowAggregate {
                    key: key.clone(),
                    aggregates: Aggregates::new(aggregates),
                    having: having.as_ref().map(|h| h.compile_condition()),
                };
                placed(input.aggregate_rows(op_name, aggregate, errors), operator)
            }
        };
        built[index] = Some(stream);
    }
    let latency = LatencyRecorder::new();
    let several = plan.leaves.len() > 1;
    for (number, (leaf, positions, names)) in plan.leaves.iter().enumerate() {
        let stream = match *leaf {
            Input::Source(at) => rows[at].clone(),
            Input::Operator(index) => built[index].clone().expect("built"),
        };
        stream.record_latency(&format!("latency-{number}"), &latency);
        if let Some(committed) = sinks {
            let suffix = several.then_some(number);
            sink_rows(
                &section.sink,
                &stream,
                (suffix, committed),
                positions,
                names,
            )
            .map_err(|e| format!("app {name}: {e}"))?;
        }
    }
    Ok(latency)
}

/// A `join` that an extreme join computes: see [`extreme_join`].
pub(super) struct Extreme {
    /// The window operator joined back (the right input).
    pub(super) right: usize,
    /// The field of the left rows whose extreme the window takes.
    pub(super) column: usize,
    /// `max` (else `min`).
    pub(super) greatest: bool,
}

/// Whether operator `index` is a `join` of rows (left) with a keyless tumbling `window`
/// over the same rows (right) whose one aggregate is `max(f)` or `min(f)` of a field,
/// without `having`, on `left.f = right.max`, with the same windows (the join's end may
/// be inclusive, the window's not): then it is the rows at their window's extreme of
/// `f`, which [`RowExtremeJoin`] finds without buffering every row (the same rows).
pub(super) fn extreme_join(section: &AppSection, plan: &Plan, index: usize) -> Option<Extreme> {
    let Step::Join { spec, keys, .. } = &plan.steps[index].0 else {
        return None;
    };
    let [left, Input::Operator(right)] = section.inputs_of(index)[..] else {
        return None;
    };
    let Step::Window {
        spec: window,
        key,
        aggregates,
        having: None,
    } = &plan.steps[right].0
    else {
        return None;
    };
    let [aggregate] = aggregates.as_slice() else {
        return None;
    };
    let greatest = match aggregate.kind {
        AggregateKind::Max => true,
        AggregateKind::Min => false,
        _ => return None,
    };
    let column = aggregate.arg.as_ref()?.as_column()?;
    let same_windows =
        window.windows == spec.windows && !window.inclusive_end && RowExtremeJoin::fits(spec);
    let on_the_extreme = matches!(
        (keys.left.as_slice(), keys.right.as_slice()),
        ([l], [r]) if l.as_column() == Some(column) && r.as_column() == Some(0)
    );
    (key.is_empty() && same_windows && on_the_extreme && section.inputs_of(right) == [left])
        .then_some(Extreme {
            right,
            column,
            greatest,
        })
}

/// A stateful operator's stream with the partitions and state its section gives it.
fn placed(stream: Stream<Row>, operator: &OperatorSection) -> Stream<Row> {
    let stream = match &operator.parallelism {
        Some(partitions) => stream.set_parallelism(*partitions.get_ref()),
        None => stream,
    };
    match operator.state.as_ref().map(|state| *state.get_ref()) {
        Some(crate::config::StateName::Exclusive) => stream.exclusive(),
        _ => stream,
    }
}

/// Ends `stream` in the app's sink: the fields at `positions`, named `names`, as JSON
/// lines, CSV or JSON lines over TCP (nothing more for a `latency` sink). With several
/// leaves, leaf `suffix` writes to `PATH.suffix`. With `committed`, a JSON-lines file
/// takes its output through the checkpoints' commits (exactly once).
pub(crate) fn sink_rows(
    sink: &SinkSection,
    stream: &Stream<Row>,
    (suffix, committed): (Option<usize>, bool),
    positions: &[usize],
    names: &[String],
) -> Result<(), String> {
    let number = suffix.unwrap_or(0);
    let file_of = |path: &str| match suffix {
        Some(suffix) => format!("{path}.{suffix}"),
        None => path.to_owned(),
    };
    let sink_name = format!("sink-{number}");
    match sink.kind {
        SinkKind::Latency => {}
        SinkKind::Nats => return Err("a nats sink takes keyed records, not typed rows".into()),
        SinkKind::Csv => {
            let path = sink.path.as_ref().ok_or("a path for the sink")?;
            stream
                .sink_csv(
                    &sink_name,
                    Path::new(&file_of(path.get_ref())),
                    names,
                    positions.to_vec(),
                )
                .map_err(|e| format!("sink: {e}"))?;
        }
        SinkKind::JsonLines | SinkKind::Tcp => {
            let names: Arc<[String]> = names.to_vec().into();
            let positions = positions.to_vec();
            let named = stream.map(&format!("fields-{number}"), move |row: Row| NamedRow {
                names: names.clone(),
                values: positions.iter().map(|&at| row[at].clone()).collect(),
            });
            if sink.kind == SinkKind::Tcp {
                let connect = sink.connect.as_ref().ok_or("an address")?;
                let address = socket_address(connect).map_err(|(_, message)| message)?;
                let timeout = sink
                    .write_timeout_ms
                    .as_ref()
                    .map_or(dirigo_operators::io::tcp::DEFAULT_WRITE_TIMEOUT, |ms| {
                        Duration::from_millis(*ms.get_ref())
                    });
                named
                    .sink_tcp_with_timeout(&sink_name, address, timeout)
                    .map_err(|e| format!("cannot connect the sink to {address}: {e}"))?;
            } else {
                let path = sink.path.as_ref().ok_or("a path for the sink")?;
                let target = if path.get_ref() == "-" {
                    LineTarget::Stdout
                } else if committed {
                    LineTarget::Committed(file_of(path.get_ref()).into())
                } else {
                    LineTarget::File(file_of(path.get_ref()).into())
                };
                named
                    .sink_json_lines(&sink_name, target)
                    .map_err(|e| format!("sink: {e}"))?;
            }
        }
    }
    Ok(())
}

/// The positions and names of the fields a sink writes of rows of `schema`: its
/// `fields`, else all.
pub(crate) fn sink_fields(
    sink: &SinkSection,
    schema: &Schema,
) -> Result<(Vec<usize>, Vec<String>), String> {
    match &sink.fields {
        None => Ok((
            (0..schema.len()).collect(),
            schema.fields().iter().map(|f| f.name.clone()).collect(),
        )),
        Some(fields) => fields
            .get_ref()
            .iter()
            .map(|field| {
                schema
                    .index_of(field.get_ref())
                    .map(|at| (at, field.get_ref().clone()))
                    .ok_or_else(|| format!("the sink has no field `{}`", field.get_ref()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|pairs| pairs.into_iter().unzip()),
    }
}

/// The most bytes read to infer a schema: the first line must fit.
const INFER_BYTES: u64 = 1 << 20;

/// A schema from the file's first JSON object (its fields in name order: integers `i64` (or
/// `u64` above the `i64` range), other numbers `f64`, strings, bools) or from its CSV
/// header and first record (a field is `i64`, `f64` or `bool` if its value reads as one,
/// else `string`). The `event_time` field, if named, is a `timestamp_ms`.
pub(crate) fn infer_schema(
    path: &Path,
    format: FormatName,
    event_time: Option<&str>,
) -> Result<Schema, String> {
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "a file to infer the schema from; cannot open {}: {e}",
            path.display()
        )
    })?;
    let mut head = String::new();
    file.take(INFER_BYTES)
        .read_to_string(&mut head)
        .map_err(|e| format!("a UTF-8 file to infer the schema from: {e}"))?;
    let mut lines = head
        .lines()
        .map(|l| l.trim_start_matches('\u{feff}').trim())
        .filter(|l| !l.is_empty());
    let timed = |name: &str, ty: Type| {
        if Some(name) == event_time {
            Type::Timestamp
        } else {
            ty
        }
    };
    let fields: Vec<(String, Type)> = match format {
        FormatName::Json => {
            let first = lines
                .next()
                .ok_or("a file with a first JSON object to infer the schema from")?;
            let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(first)
                .map_err(|e| {
                    format!("a first line that is a JSON object to infer the schema from: {e}")
                })?;
            let mut fields = Vec::new();
            for (name, value) in object {
                let ty = match &value {
                    serde_json::Value::Bool(_) => Type::Bool,
                    serde_json::Value::Number(n) if n.is_i64() => Type::I64,
                    serde_json::Value::Number(n) if n.is_u64() => Type::U64,
                    serde_json::Value::Number(_) => Type::F64,
                    serde_json::Value::String(_) => Type::String,
                    _ => return Err(format!(
                        "fields of numbers, text or bools to infer a schema; `{name}` is {value}: declare the schema instead"
                    )),
                };
                fields.push((name.clone(), timed(&name, ty)));
            }
            fields
        }
        FormatName::Csv => {
            let header = lines
                .next()
                .ok_or("a CSV header line to infer the schema from")?;
            let names: Vec<&str> = header.split(',').map(str::trim).collect();
            let record = lines
                .next()
                .ok_or("a first record after the CSV header to infer the types from")?;
            let values: Vec<&str> = record.split(',').map(str::trim).collect();
            if values.len() != names.len() {
                return Err(format!(
                    "a first record with as many fields as the header ({}); it has {}",
                    names.len(),
                    values.len()
                ));
            }
            names
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let ty = if value.parse::<i64>().is_ok() {
                        Type::I64
                    } else if value.parse::<f64>().is_ok() {
                        Type::F64
                    } else if value == "true" || value == "false" {
                        Type::Bool
                    } else {
                        Type::String
                    };
                    ((*name).to_owned(), timed(name, ty))
                })
                .collect()
        }
    };
    if fields.is_empty() {
        return Err("a first record with at least one field to infer the schema from".into());
    }
    Ok(Schema::new(fields))
}
