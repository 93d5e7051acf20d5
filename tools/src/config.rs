//! The TOML configuration: what `dirigo validate` checks and what the runtime is built
//! from. Every key, its type, default and an example are in `configs/README.md`.
//!
//! Errors point at the offending spot as `FILE:LINE:COLUMN: what was expected`, and the
//! command exits with code 2; no input makes the loader panic (a proptest mutates valid
//! files to check that).
//!
//! Sections: `[runtime]`, `[scheduler]`, `[run]`, `[report]`, and one `[[app]]` per
//! application (a NEXMark query by name, or a source, a chain or tree of operators and a
//! sink). `crate::apps` turns the apps into dataflows; `crate::run` runs them.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dirigo_operators::io::{KeyDist, LoadShape};
use dirigo_operators::nexmark::queries::QUERIES;
use dirigo_runtime::background::ServicePriority;
use dirigo_runtime::scheduling::{Dirigo, Edf, Fifo, RoundRobin};
use dirigo_runtime::RuntimeBuilder;
use serde::Deserialize;
use toml::Spanned;

pub mod nats;
pub mod sources;
pub use nats::NatsSection;
pub use sources::Input;

/// A configuration file, parsed and checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shards, placement and the shard loop's settings.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// The scheduling policy and its parameters.
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// How long `dirigo run` runs.
    #[serde(default)]
    pub run: RunSection,
    /// What the run writes.
    #[serde(default)]
    pub report: ReportSection,
    /// The live metrics endpoint and page.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Checkpoints of every app's state, and recovery from them (off without it).
    pub checkpoint: Option<CheckpointSection>,
    /// The applications.
    #[serde(default, rename = "app")]
    pub apps: Vec<AppSection>,
    /// The folder of the file: input paths (`[app.source] path`) are relative to it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[run]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Seconds to run before the sources are stopped (default 15; `--duration` wins).
    pub duration_s: Option<Spanned<f64>>,
    /// Seconds the pipelines get to drain once the sources stop (default
    /// [`DEFAULT_DRAIN_SECONDS`]); what is still in flight then is abandoned.
    pub drain_timeout_s: Option<Spanned<f64>>,
}

/// `[checkpoint]`: see `configs/README.md` and `dirigo_operators::checkpoint`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// The directory of the checkpoints (relative to the file's folder).
    pub dir: Spanned<String>,
    /// Time between two checkpoints (`"1s"`, `"100ms"`; default 1 s).
    pub interval: Option<Spanned<String>>,
    /// Complete checkpoints kept (default 3).
    pub retain: Option<Spanned<u64>>,
    /// A checkpoint not complete within this long is abandoned (default 60 s).
    pub timeout: Option<Spanned<String>>,
    /// The checkpoint thread's priority: `"normal"` (default) or `"idle"` (only CPU the
    /// shards leave).
    pub priority: Option<Spanned<String>>,
}

/// The most complete checkpoints `[checkpoint] retain` keeps.
pub const MAX_RETAIN: u64 = 1_000;
/// The longest `[checkpoint] interval` and `timeout`.
pub const MAX_CHECKPOINT_WAIT: Duration = Duration::from_secs(3_600);

impl CheckpointSection {
    /// `interval` or `timeout`, read and bounded: 1 ms to [`MAX_CHECKPOINT_WAIT`].
    fn wait(
        value: &Option<Spanned<String>>,
        default: Duration,
        what: &str,
    ) -> Result<Duration, (Range<usize>, String)> {
        let Some(value) = value else {
            return Ok(default);
        };
        let wait = crate::run::parse_duration(value.get_ref())
            .map_err(|e| (value.span(), format!("{what}: {e}")))?;
        if wait < Duration::from_millis(1) || wait > MAX_CHECKPOINT_WAIT {
            return Err((
                value.span(),
                format!("{what} from 1ms to 1h, not {:?}", value.get_ref()),
            ));
        }
        Ok(wait)
    }

    fn check(&self) -> Result<(), (Range<usize>, String)> {
        if self.dir.get_ref().trim().is_empty() {
            return Err((self.dir.span(), "a directory for the checkpoints".into()));
        }
        Self::wait(&self.interval, Duration::from_secs(1), "an interval")?;
        Self::wait(&self.timeout, Duration::from_secs(60), "a timeout")?;
        in_range(&self.retain, 1..=MAX_RETAIN, "checkpoints to keep", "")?;
        Self::priority(&self.priority)?;
        Ok(())
    }

    fn priority(
        value: &Option<Spanned<String>>,
    ) -> Result<ServicePriority, (Range<usize>, String)> {
        let Some(value) = value else {
            return Ok(ServicePriority::default());
        };
        ServicePriority::parse(value.get_ref()).ok_or_else(|| {
            (
                value.span(),
                format!(
                    "a priority, \"idle\" or \"normal\", not {:?}",
                    value.get_ref()
                ),
            )
        })
    }

    /// The checkpoints' settings, with `dir` relative to `base_dir`.
    pub fn settings(&self, base_dir: &Path) -> dirigo_operators::checkpoint::CheckpointConfig {
        let mut config =
            dirigo_operators::checkpoint::CheckpointConfig::new(base_dir.join(self.dir.get_ref()));
        // Checked at load.
        config.interval =
            Self::wait(&self.interval, config.interval, "").unwrap_or(config.interval);
        config.timeout = Self::wait(&self.timeout, config.timeout, "").unwrap_or(config.timeout);
        if let Some(retain) = &self.retain {
            config.retain = *retain.get_ref() as usize;
        }
        config.priority = Self::priority(&self.priority).unwrap_or_default();
        config
    }
}

/// `[report]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSection {
    /// The folder for the report, the `.hgrm` files and the plots (default
    /// `dirigo-report`).
    pub dir: Option<String>,
    /// The JSON report's path (default `DIR/report.json`; `--report` wins).
    pub json: Option<String>,
    /// Write one `.hgrm` file per app (default true).
    pub hgrm: Option<bool>,
    /// Draw the SVG plots (default true).
    pub plots: Option<bool>,
    /// Milliseconds between two points of the timeline (default 100).
    pub sample_ms: Option<Spanned<u64>>,
}

/// `[metrics]`: where `dirigo run` serves Prometheus metrics (`/metrics`), its live
/// page (`/`) and `/api/status` while it runs (see `live`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// The address to listen on (off when absent): `127.0.0.1:9898`, or a port alone for
    /// loopback. Another address serves every host that can reach it (with a warning).
    pub listen: Option<Spanned<String>>,
}

/// One `[[app]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    /// Its name in reports: unique, letters, digits, `-` and `_`.
    pub name: Spanned<String>,
    /// Latency target from a record's intended send time to its output, ms.
    pub slo_ms: Option<Spanned<f64>>,
    /// Partitions per operator (default: one per shard).
    pub parallelism: Option<Spanned<u32>>,
    /// A NEXMark query by name (`q0` … `q11`) instead of `[[app.operator]]`s.
    pub query: Option<Spanned<String>>,
    /// Where its records come from: `[app.source]`, or several `[[app.source]]`s
    /// (see [`sources`]).
    #[serde(default, rename = "source", deserialize_with = "sources::one_or_many")]
    pub sources: Vec<Spanned<SourceSection>>,
    /// Its operators, in any order; each reads from `input` (default: the one listed
    /// before it, or the source).
    #[serde(default, rename = "operator")]
    pub operators: Vec<OperatorSection>,
    /// Where its outputs go (every operator no other one reads from feeds it).
    #[serde(default)]
    pub sink: SinkSection,
}

/// `[app.source]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// The name operators read it by (default `source`); each of several sources needs
    /// one.
    pub name: Option<Spanned<String>>,
    /// Which source (default: `nexmark` for a `query`, else `generator`).
    pub kind: Option<SourceKind>,
    /// How fast records are offered (default: as fast as the pipeline takes them).
    pub shape: Option<Spanned<LoadShape>>,
    /// `generator`: which keys records carry (default 1000 uniform keys).
    pub keys: Option<Spanned<KeyDist>>,
    /// `generator`, `nexmark`: how many records (default: until the run ends).
    pub events: Option<Spanned<u64>>,
    /// `generator`: the seed of every random choice (default 1).
    pub seed: Option<u64>,
    /// How far behind the highest event time seen watermarks trail, ms (default 0).
    pub out_of_orderness_ms: Option<Spanned<u64>>,
    /// Source partitions (default: the app's parallelism; file, tcp and nats: 1).
    pub partitions: Option<Spanned<u32>>,
    /// `file`: the file to read, relative to the configuration file's folder.
    pub path: Option<Spanned<String>>,
    /// `file`, `tcp`, `nats`: `csv` (`key,value,time`) or `json` (default `csv`).
    #[serde(default)]
    pub format: FormatName,
    /// `tcp`: the address to listen on, `HOST:PORT`.
    pub listen: Option<Spanned<String>>,
    /// `tcp`: `lines` or `length-prefixed` (default `lines`).
    #[serde(default)]
    pub framing: FramingName,
    /// `file`, `tcp`: where malformed records go (default `DIR/APP.dead-letters.jsonl`).
    pub dead_letters: Option<Spanned<String>>,
    /// `file`, `tcp`: the most bytes of dead letters written (default 64 MiB).
    pub dead_letter_max_bytes: Option<Spanned<u64>>,
    /// `file`, `tcp`: the most dead letters written per second (default 1000).
    pub dead_letter_max_per_s: Option<Spanned<u32>>,
    /// `tcp`: the most connections open at once (default 64).
    pub max_connections: Option<Spanned<usize>>,
    /// `tcp`: the longest line or frame, bytes (default 1 MiB).
    pub max_frame_bytes: Option<Spanned<usize>>,
    /// `tcp`: close a connection idle this long, ms (default 60 000).
    pub idle_timeout_ms: Option<Spanned<u64>>,
    /// `tcp`: the shared secret each connection must send as its first line or frame.
    pub token: Option<Spanned<Secret>>,
    /// `file`, `tcp`, `nats`: the fields of typed rows and their types, or (`file`
    /// alone) `"infer"`; `nexmark`: `"infer"`, the events' fields (see `crate::rows`).
    /// Without it, records are `key,value,time`.
    pub schema: Option<Spanned<crate::rows::SchemaConfig>>,
    /// With a `schema`: the field that gives each row's event time.
    pub event_time: Option<Spanned<String>>,
    /// A `file`, `tcp` or `nats` source of typed rows: what becomes of a row more than
    /// `out_of_orderness_ms` behind the highest event time before it (default `drop`).
    pub late: Option<Spanned<LateName>>,
    /// `nats`: the server, stream, consumer and the rest (`[app.source.nats]`).
    pub nats: Option<Spanned<NatsSection>>,
}

/// A string kept out of logs: its `Debug` shows no character of it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// The sources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// Synthetic keyed records (`key`, `value`, `time`).
    #[default]
    Generator,
    /// NEXMark events (for `query`).
    Nexmark,
    /// Keyed records from a CSV or JSON-lines file.
    File,
    /// Keyed records from TCP connections.
    Tcp,
    /// Keyed records from a NATS JetStream stream.
    Nats,
}

/// Record formats of files and connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FormatName {
    /// `key,value,time`.
    #[default]
    Csv,
    /// `{"key": .., "value": .., "time": ..}`.
    Json,
}

/// What a source of typed rows does with late rows (see `dirigo_operators::io::late`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LateName {
    /// Passed on; a window, top or join whose watermark passed the row's windows drops
    /// it and counts it as `late`.
    #[default]
    Drop,
    /// A dead letter with its reason, decided by the source.
    DeadLetter,
}

/// Framings of TCP sources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FramingName {
    /// One record per line.
    #[default]
    Lines,
    /// A 4-byte big-endian length, then one JSON record.
    LengthPrefixed,
}

/// One `[[app.operator]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSection {
    /// Its name: unique in the app, not `source`.
    pub name: Spanned<String>,
    /// What it does.
    pub kind: Spanned<OperatorKind>,
    /// The operator it reads from, or `source`, or a list of them (default: the one
    /// listed before it).
    pub input: Option<Spanned<Inputs>>,
    /// Its partitions (default: the app's).
    pub parallelism: Option<Spanned<u32>>,
    /// Stateful kinds: `mergeable` (may get lessees; the default) or `exclusive`.
    pub state: Option<Spanned<StateName>>,
    /// CPU spent per record, ns (default 0): stands for a costly function.
    pub work_ns: Option<Spanned<u64>>,
    /// `filter`: the share of records kept, in percent (by value).
    pub keep_percent: Option<Spanned<u64>>,
    /// `map`, fault injection: the handler panics on a record with this `value`, which
    /// fails the app (exit code 4). For trying out how a failed app is reported.
    pub panic_on_value: Option<Spanned<u64>>,
    /// `map` with `panic_on_value`: panic only the first this many times the value is met
    /// in the process (default: every time). With checkpoints, a run restores from the
    /// last complete checkpoint after a panic: a panic that does not come back is a
    /// fault it recovers from.
    pub panic_times: Option<Spanned<u64>>,
    /// Window kinds: the windows.
    pub window: Option<Spanned<WindowConfig>>,
    /// Window kinds: the order of a firing's rows, `key` (the default) or `any` (sooner
    /// out: no sort on the latency path).
    pub row_order: Option<Spanned<RowOrder>>,
    /// Typed `filter`: the condition rows must meet (SQL).
    #[serde(rename = "where")]
    pub condition: Option<Spanned<String>>,
    /// Typed `select`: the output fields, each an expression over the input's.
    pub fields: Option<Spanned<crate::rows::NamedExprs>>,
    /// Typed `key`, `window`, `aggregate` and `top`: the key fields.
    pub by: Option<Spanned<Vec<Spanned<String>>>>,
    /// Typed `window` and `aggregate`: the output aggregates, such as `{ n = "count()" }`.
    pub aggregates: Option<Spanned<crate::rows::NamedExprs>>,
    /// Typed `window` and `aggregate`: the condition its output rows must meet.
    pub having: Option<Spanned<String>>,
    /// Typed `top`: what rows are ranked by, highest first (SQL).
    pub order: Option<Spanned<String>>,
    /// Typed `top`: how many ranks (ties included).
    pub k: Option<Spanned<u64>>,
    /// Typed `join`: the equalities of the two inputs' keys (SQL, such as
    /// `people.person_id = auctions.seller`).
    pub on: Option<Spanned<String>>,
}

/// The order of a window firing's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowOrder {
    /// By window end, then key: the same whatever the scaling.
    Key,
    /// The window's hash order.
    Any,
}

/// What an operator reads: one name, or several (their records merged, its frontier the
/// least of theirs).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "an operator name (or `source`), or a list of them"
)]
pub enum Inputs {
    /// One input.
    One(String),
    /// Several inputs.
    Many(Vec<String>),
}

impl Inputs {
    /// The names, in order.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::One(name) => vec![name.as_str()],
            Self::Many(names) => names.iter().map(String::as_str).collect(),
        }
    }
}

/// Operator kinds: all read and write keyed records (`key`, `value`, `time`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperatorKind {
    /// Passes each record on (after `work_ns` of CPU).
    Map,
    /// Keeps records whose `value % 100 < keep_percent`.
    Filter,
    /// Per key and window: `value` = how many records.
    WindowCount,
    /// Per key and window: `value` = the sum of the values.
    WindowSum,
    /// Per key and window: `value` = the largest value.
    WindowMax,
    /// Per key over the whole stream: `value` = the running sum, emitted as it changes.
    RunningSum,
    /// Typed rows: computed fields (`fields`).
    Select,
    /// Typed rows: the key of the windows that follow (`by`).
    Key,
    /// Typed rows: per key and window, named aggregates (`by`, `aggregates`, `having`).
    Window,
    /// Typed rows: per key over the whole stream, named aggregates (`by`, `aggregates`,
    /// `having`), put out as they change.
    Aggregate,
    /// Typed rows: per key and window, the rows with the `k` highest `order`, ties
    /// included.
    Top,
    /// Typed rows: per window, the pairs of rows of its two inputs whose keys (`on`)
    /// are equal.
    Join,
    /// The records (or typed rows) of its two inputs or more, as they come.
    Union,
}

impl OperatorKind {
    /// Whether the kind keeps state per key.
    pub fn is_stateful(self) -> bool {
        !matches!(
            self,
            Self::Map | Self::Filter | Self::Select | Self::Key | Self::Union
        )
    }

    /// Whether the kind needs `window`.
    pub fn is_windowed(self) -> bool {
        matches!(
            self,
            Self::WindowCount
                | Self::WindowSum
                | Self::WindowMax
                | Self::Window
                | Self::Top
                | Self::Join
        )
    }
}

/// Where a stateful operator's state may live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateName {
    /// Lessees may take part of the work; state is merged back for window ends.
    Mergeable,
    /// Only on the home shard.
    Exclusive,
}

/// `window = { kind = "tumbling", size_ms = 1000 }` and the like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// Back-to-back windows of `size_ms`.
    Tumbling {
        /// Window length, ms.
        size_ms: u64,
        /// Records at exactly a window's end belong to it too (and it fires 1 ms later).
        #[serde(default)]
        inclusive_end: bool,
    },
    /// Windows of `size_ms` starting every `slide_ms`.
    Sliding {
        /// Window length, ms.
        size_ms: u64,
        /// Time between two window starts, ms.
        slide_ms: u64,
        /// Records at exactly a window's end belong to it too (and it fires 1 ms later).
        #[serde(default)]
        inclusive_end: bool,
    },
    /// Per key, records less than `gap_ms` apart.
    Session {
        /// The gap that ends a session, ms.
        gap_ms: u64,
    },
}

impl WindowConfig {
    /// The windows and whether their end is inclusive.
    pub fn spec(self) -> dirigo_operators::window::WindowSpec {
        use dirigo_operators::window::{WindowSpec, Windows};
        let (windows, inclusive_end) = match self {
            Self::Tumbling {
                size_ms,
                inclusive_end,
            } => (Windows::Tumbling { size: size_ms }, inclusive_end),
            Self::Sliding {
                size_ms,
                slide_ms,
                inclusive_end,
            } => (
                Windows::Sliding {
                    size: size_ms,
                    slide: slide_ms,
                },
                inclusive_end,
            ),
            Self::Session { gap_ms } => (Windows::Session { gap: gap_ms }, false),
        };
        WindowSpec {
            inclusive_end,
            ..WindowSpec::from(windows)
        }
    }
}

/// `[app.sink]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// Where outputs go; their latency is recorded whatever the kind.
    #[serde(default)]
    pub kind: SinkKind,
    /// `json-lines`: the file (`-` for standard output).
    pub path: Option<Spanned<String>>,
    /// `tcp`: the address to connect to, `HOST:PORT`.
    pub connect: Option<Spanned<String>>,
    /// `tcp`: the longest a write may block the sink's shard, ms (default 5000).
    pub write_timeout_ms: Option<Spanned<u64>>,
    /// Typed rows: the fields to write, in order (default: all).
    pub fields: Option<Spanned<Vec<Spanned<String>>>>,
    /// `nats`: the server, stream, subject and the rest (`[app.sink.nats]`).
    pub nats: Option<Spanned<NatsSection>>,
}

/// The sinks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// Only the latency of each output.
    #[default]
    Latency,
    /// One JSON object per output line.
    JsonLines,
    /// JSON lines over a TCP connection.
    Tcp,
    /// Typed rows as CSV, after a header line.
    Csv,
    /// JSON messages published to a NATS JetStream stream.
    Nats,
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// How many shards (one per CPU by default).
    pub shards: Option<Spanned<usize>>,
    /// The CPUs to pin shards to, one shard each (instead of `shards`).
    pub cpus: Option<Spanned<Vec<Spanned<usize>>>>,
    /// `pinned` (default: one shard per CPU, each held to it) or `unpinned` (the OS
    /// places the shard threads).
    pub placement: Option<PlacementName>,
    /// Messages per shard-to-shard ring.
    pub ring_capacity: Option<Spanned<usize>>,
    /// Messages a shard's mailboxes hold before it stops draining its inbound rings.
    pub mailbox_high_water: Option<Spanned<usize>>,
    /// How long an idle shard polls before it parks, in microseconds.
    pub spin_budget_us: Option<Spanned<u64>>,
    /// Handler time a shard runs before it looks at its timers and rings again, and what
    /// batches are cut to, in microseconds (default: from the tightest SLO).
    pub turn_budget_us: Option<Spanned<u64>>,
    /// The longest park, in milliseconds.
    pub park_timeout_ms: Option<Spanned<u64>>,
    /// Deactivate actors idle this long, in seconds (0: never).
    pub idle_deactivation_s: Option<Spanned<u64>>,
    /// Messages from outside threads that may wait per shard.
    pub intake_capacity: Option<Spanned<usize>>,
    /// Warn about handlers that hold a shard longer than this, in milliseconds.
    pub handler_warning_ms: Option<Spanned<u64>>,
    /// Whether the process's memory may use transparent huge pages (default: no; a huge
    /// page fault stalls a shard while 2 MiB are zeroed).
    pub transparent_huge_pages: Option<bool>,
    /// Whether the allocator gives freed memory back to the operating system (default:
    /// no; it keeps it for reuse, see `allocator`). Applied by the `dirigo` command, which
    /// owns the allocator, not by the runtime builder.
    pub release_freed_memory: Option<bool>,
}

/// Whether shards are pinned to CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementName {
    /// Each shard held to its CPU.
    Pinned,
    /// The OS places the shard threads.
    Unpinned,
}

/// `[scheduler]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    /// Which policy orders the shards' ready work.
    #[serde(default)]
    pub policy: PolicyName,
    /// `dirigo`: ask for a lessee once slack falls below this share of the SLO.
    pub headroom: Option<Spanned<f64>>,
    /// `dirigo`: retire a lessee idle this long, in milliseconds.
    pub retire_after_ms: Option<Spanned<u64>>,
    /// `dirigo`: the most lessees one actor gets.
    pub max_lessees: Option<Spanned<usize>>,
    /// `dirigo`: drop messages that cannot meet their deadline anywhere.
    pub shed: Option<bool>,
    /// `dirigo`: spread mergeable operators of apps with an SLO off a shard that hosts
    /// apps without one once it is busier than this share of the time (1: never).
    pub best_effort_spread_above: Option<Spanned<f64>>,
}

/// The built-in policies, by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// Ready actors take turns (the default).
    #[default]
    RoundRobin,
    /// Oldest event first.
    Fifo,
    /// Earliest deadline first.
    Edf,
    /// Deadlines, laxity admission and automatic lessees.
    Dirigo,
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "round-robin",
            Self::Fifo => "fifo",
            Self::Edf => "edf",
            Self::Dirigo => "dirigo",
        })
    }
}

/// Why a configuration was refused: where, and what was expected.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place.
    pub position: Option<(usize, usize)>,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

/// The largest configuration file `dirigo` reads: 1 MiB, far above any real one (the
/// examples in `configs/` are a few KiB), so that a wrong path cannot make it read
/// without end.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The bytes of the configuration file at `path`, if it is a regular file of at most
/// [`MAX_CONFIG_BYTES`] (see [`read_regular_file`]).
fn read_config_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    read_regular_file(path, MAX_CONFIG_BYTES, "a configuration").map_err(|refused| ConfigError {
        path: path.to_owned(),
        position: refused.at_start.then_some((1, 1)),
        message: refused.message,
    })
}

/// Why [`read_regular_file`] did not read a file.
#[derive(Debug)]
pub struct Refused {
    /// Whether the file itself is wrong (`FILE:1:1`), rather than unreadable.
    pub at_start: bool,
    /// What was expected, or why it could not be read.
    pub message: String,
}

/// The bytes of the file at `path`, if it is a regular file of at most `max_bytes`;
/// `what` names what it should hold, for the message. Opened without blocking and
/// checked on the open handle, so a FIFO never makes the open or the read wait, and a
/// device (`/dev/zero`) is never read without end.
pub fn read_regular_file(path: &Path, max_bytes: u64, what: &str) -> Result<Vec<u8>, Refused> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

    let unreadable = |error: std::io::Error| Refused {
        at_start: false,
        message: format!("cannot read the file: {error}"),
    };
    let wrong = |message: String| Refused {
        at_start: true,
        message,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(unreadable)?;
    let metadata = file.metadata().map_err(unreadable)?;
    let kind = metadata.file_type();
    if !kind.is_file() {
        let this = if kind.is_dir() {
            "a folder"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(wrong(format!("a regular file ({what}); this is {this}")));
    }
    if metadata.len() > max_bytes {
        return Err(wrong(format!(
            "{what} of at most {max_bytes} bytes; this file has {}",
            metadata.len()
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    // One byte more than allowed tells a file that grew since `metadata` apart.
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > max_bytes {
        return Err(wrong(format!(
            "{what} of at most {max_bytes} bytes; this file is longer"
        )));
    }
    Ok(bytes)
}

impl Config {
    /// Reads and checks the configuration at `path`: a regular file of at most
    /// [`MAX_CONFIG_BYTES`], in UTF-8. A FIFO, a device (`/dev/zero`), a socket or a
    /// folder is refused at once, without reading it (a FIFO would wait for a writer, a
    /// device may never end).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let bytes = read_config_file(path)?;
        let text = String::from_utf8(bytes).map_err(|error| {
            let valid = error.utf8_error().valid_up_to();
            let bytes = error.as_bytes();
            // The prefix up to `valid` is UTF-8, so it gives the line and column.
            let prefix = std::str::from_utf8(&bytes[..valid]).unwrap_or_default();
            ConfigError {
                path: path.to_owned(),
                position: Some(position(prefix, valid)),
                message: format!(
                    "UTF-8 text (a TOML file); found the byte 0x{:02X}, so this is not text",
                    bytes[valid]
                ),
            }
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let error_at = |span: Option<Range<usize>>, message: String| ConfigError {
            path: path.to_owned(),
            // Errors without a place of their own point at the file's start.
            position: Some(span.map_or((1, 1), |span| position(text, span.start))),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|error| {
            let message = error.message().trim().replace('\n', " ");
            error_at(error.span(), message)
        })?;
        let mut config = config;
        config.base_dir = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        config
            .check(&available_cpus())
            .map_err(|(span, message)| error_at(Some(span), message))?;
        crate::rows::check(&config, text)
            .map_err(|(span, message)| error_at(Some(span), message))?;
        Ok(config)
    }

    /// The checks TOML types cannot express; the span of the offending value.
    fn check(&self, available: &[usize]) -> Result<(), (Range<usize>, String)> {
        self.check_runtime(available)?;
        if let Some(checkpoint) = &self.checkpoint {
            checkpoint.check()?;
            // The checkpoints commit JSON-lines files; a CSV file would be written as
            // rows come, and a resumed run would lose what it held.
            if let Some(app) = self.apps.iter().find(|app| app.sink.kind == SinkKind::Csv) {
                let span = app
                    .sink
                    .path
                    .as_ref()
                    .map_or_else(|| app.name.span(), Spanned::span);
                return Err((
                    span,
                    "a json-lines sink with [checkpoint]: a csv file is not committed by \
                     checkpoints, so a resumed run would lose what it wrote"
                        .into(),
                ));
            }
        }
        if let Some(duration) = &self.run.duration_s {
            let seconds = *duration.get_ref();
            if !(seconds > 0.0 && seconds <= MAX_SECONDS) {
                return Err((
                    duration.span(),
                    format!("a duration above 0 s and at most {MAX_SECONDS} s, not {seconds}"),
                ));
            }
        }
        if let Some(listen) = &self.metrics.listen {
            socket_address(listen)?;
        }
        in_range(
            &self.report.sample_ms,
            1..=MAX_SAMPLE_MS,
            "a sampling interval",
            "ms",
        )?;
        if let Some(drain) = &self.run.drain_timeout_s {
            let seconds = *drain.get_ref();
            if !(seconds > 0.0 && seconds <= MAX_DRAIN_SECONDS) {
                return Err((
                    drain.span(),
                    format!(
                        "a drain timeout above 0 s and at most {MAX_DRAIN_SECONDS} s, not {seconds}"
                    ),
                ));
            }
        }
        for (index, app) in self.apps.iter().enumerate() {
            if self.apps[..index]
                .iter()
                .any(|earlier| earlier.name.get_ref() == app.name.get_ref())
            {
                return Err((
                    app.name.span(),
                    format!("a name no other app has; `{}` is taken", app.name.get_ref()),
                ));
            }
            app.check(&self.base_dir)?;
        }
        Ok(())
    }

    /// The `[runtime]` and `[scheduler]` checks.
    fn check_runtime(&self, available: &[usize]) -> Result<(), (Range<usize>, String)> {
        let runtime = &self.runtime;
        if let (Some(shards), Some(_)) = (&runtime.shards, &runtime.cpus) {
            return Err((
                shards.span(),
                "either `shards` or `cpus`, not both: `cpus` already says how many shards".into(),
            ));
        }
        if let Some(shards) = &runtime.shards {
            if *shards.get_ref() == 0 {
                return Err((shards.span(), "at least 1 shard".into()));
            }
        }
        if let Some(cpus) = &runtime.cpus {
            if cpus.get_ref().is_empty() {
                return Err((cpus.span(), "at least one CPU".into()));
            }
            for (index, cpu) in cpus.get_ref().iter().enumerate() {
                if cpus.get_ref()[..index]
                    .iter()
                    .any(|earlier| earlier.get_ref() == cpu.get_ref())
                {
                    return Err((cpu.span(), format!("CPU {} is listed twice", cpu.get_ref())));
                }
                if !available.contains(cpu.get_ref()) {
                    return Err((
                        cpu.span(),
                        format!(
                            "a CPU this process may run on ({available:?}); CPU {} is not one",
                            cpu.get_ref()
                        ),
                    ));
                }
            }
        }
        let most_shards = max_shards(available.len());
        if let Some(shards) = &runtime.shards {
            if *shards.get_ref() > most_shards {
                return Err((
                    shards.span(),
                    format!(
                        "at most {most_shards} shards ({MAX_SHARDS_PER_CPU} per CPU this process \
                         may run on, {} here, and never more than {MAX_SHARDS}), not {}",
                        available.len(),
                        shards.get_ref()
                    ),
                ));
            }
        }
        in_range(
            &runtime.ring_capacity,
            2..=MAX_RING_CAPACITY,
            "a ring capacity",
            "messages",
        )?;
        if let Some(capacity) = &runtime.ring_capacity {
            // Every ordered pair of shards has its own ring, allocated up front.
            let shards = runtime.shards.as_ref().map_or_else(
                || {
                    runtime
                        .cpus
                        .as_ref()
                        .map_or(available.len(), |cpus| cpus.get_ref().len())
                },
                |shards| *shards.get_ref(),
            );
            let slots = capacity.get_ref().next_power_of_two() as u128
                * (shards as u128)
                * (shards.saturating_sub(1) as u128);
            if slots > MAX_RING_SLOTS as u128 {
                return Err((
                    capacity.span(),
                    format!(
                        "rings that hold at most {MAX_RING_SLOTS} messages together; {shards} \
                         shards have {} rings of {} (the capacity rounded up to a power of two) \
                         = {slots}",
                        shards * shards.saturating_sub(1),
                        capacity.get_ref().next_power_of_two()
                    ),
                ));
            }
        }
        in_range(
            &runtime.intake_capacity,
            1..=MAX_QUEUE,
            "an intake capacity",
            "messages",
        )?;
        in_range(
            &runtime.mailbox_high_water,
            1..=MAX_QUEUE,
            "a mailbox high-water mark",
            "messages",
        )?;
        in_range(
            &runtime.spin_budget_us,
            0..=1_000_000,
            "a spin budget",
            "µs",
        )?;
        in_range(&runtime.turn_budget_us, 1..=10_000, "a turn budget", "µs")?;
        in_range(&runtime.park_timeout_ms, 1..=60_000, "a park timeout", "ms")?;
        in_range(
            &runtime.idle_deactivation_s,
            0..=MAX_SECONDS as u64,
            "an idle deactivation time",
            "s",
        )?;
        in_range(
            &runtime.handler_warning_ms,
            0..=3_600_000,
            "a handler warning",
            "ms",
        )?;
        in_range(
            &self.scheduler.retire_after_ms,
            0..=3_600_000,
            "a lessee retirement time",
            "ms",
        )?;
        in_range(
            &self.scheduler.max_lessees,
            0..=MAX_LESSEES,
            "a lessee count",
            "lessees",
        )?;
        if let Some(headroom) = &self.scheduler.headroom {
            if !(0.0..=1.0).contains(headroom.get_ref()) {
                return Err((
                    headroom.span(),
                    format!(
                        "a share of the SLO between 0 and 1, not {}",
                        headroom.get_ref()
                    ),
                ));
            }
        }
        if let Some(above) = &self.scheduler.best_effort_spread_above {
            if !(0.0..=1.0).contains(above.get_ref()) {
                return Err((
                    above.span(),
                    format!(
                        "a share of the time between 0 and 1 (1: never), not {}",
                        above.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// How long the pipelines may drain once the sources stopped.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs_f64(
            self.run
                .drain_timeout_s
                .as_ref()
                .map_or(DEFAULT_DRAIN_SECONDS, |seconds| *seconds.get_ref()),
        )
    }

    /// How long `dirigo run` runs unless told otherwise.
    pub fn duration(&self) -> Duration {
        self.run
            .duration_s
            .as_ref()
            .map_or(Duration::from_secs(15), |seconds| {
                Duration::from_secs_f64(*seconds.get_ref())
            })
    }

    /// Applies the settings to a runtime builder.
    pub fn apply<M: Send + 'static>(&self, mut builder: RuntimeBuilder<M>) -> RuntimeBuilder<M> {
        let runtime = &self.runtime;
        if let Some(shards) = &runtime.shards {
            builder = builder.shards(*shards.get_ref());
        }
        if let Some(cpus) = &runtime.cpus {
            builder = builder.cpus(
                cpus.get_ref()
                    .iter()
                    .map(|cpu| *cpu.get_ref())
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(placement) = runtime.placement {
            builder = builder.pinned(placement == PlacementName::Pinned);
        }
        if let Some(capacity) = &runtime.ring_capacity {
            builder = builder.ring_capacity(*capacity.get_ref());
        }
        if let Some(mark) = &runtime.mailbox_high_water {
            builder = builder.mailbox_high_water(*mark.get_ref());
        }
        if let Some(budget) = &runtime.spin_budget_us {
            builder = builder.spin_budget(Duration::from_micros(*budget.get_ref()));
        }
        if let Some(budget) = &runtime.turn_budget_us {
            builder = builder.turn_budget(Duration::from_micros(*budget.get_ref()));
        }
        if let Some(timeout) = &runtime.park_timeout_ms {
            builder = builder.park_timeout(Duration::from_millis(*timeout.get_ref()));
        }
        if let Some(seconds) = runtime.idle_deactivation_s.as_ref().map(|s| *s.get_ref()) {
            builder =
                builder.idle_deactivation((seconds > 0).then(|| Duration::from_secs(seconds)));
        }
        if let Some(capacity) = &runtime.intake_capacity {
            builder = builder.intake_capacity(*capacity.get_ref());
        }
        if let Some(bound) = &runtime.handler_warning_ms {
            builder = builder.handler_warning(Duration::from_millis(*bound.get_ref()));
        }
        if let Some(allowed) = runtime.transparent_huge_pages {
            builder = builder.transparent_huge_pages(allowed);
        }
        let scheduler = &self.scheduler;
        match scheduler.policy {
            PolicyName::RoundRobin => builder.policy(RoundRobin),
            PolicyName::Fifo => builder.policy(Fifo),
            PolicyName::Edf => builder.policy(Edf),
            PolicyName::Dirigo => {
                let defaults = Dirigo::default();
                builder.policy(Dirigo {
                    headroom: scheduler
                        .headroom
                        .as_ref()
                        .map_or(defaults.headroom, |headroom| *headroom.get_ref()),
                    retire_after: scheduler
                        .retire_after_ms
                        .as_ref()
                        .map_or(defaults.retire_after, |ms| {
                            Duration::from_millis(*ms.get_ref())
                        }),
                    max_lessees: scheduler
                        .max_lessees
                        .as_ref()
                        .map_or(defaults.max_lessees, |most| *most.get_ref()),
                    shed: scheduler.shed.unwrap_or(defaults.shed),
                    best_effort_spread_above: match &scheduler.best_effort_spread_above {
                        None => defaults.best_effort_spread_above,
                        Some(above) if *above.get_ref() >= 1.0 => None,
                        Some(above) => Some(*above.get_ref()),
                    },
                })
            }
        }
    }

    /// One line about what the file sets up.
    pub fn summary(&self) -> String {
        let shards = match (&self.runtime.shards, &self.runtime.cpus) {
            (Some(shards), _) => format!("{} shards", shards.get_ref()),
            (_, Some(cpus)) => format!(
                "{} shards on CPUs {:?}",
                cpus.get_ref().len(),
                cpus.get_ref()
                    .iter()
                    .map(|cpu| *cpu.get_ref())
                    .collect::<Vec<_>>()
            ),
            _ => "one shard per CPU".into(),
        };
        let apps = if self.apps.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = self
                .apps
                .iter()
                .map(|app| app.name.get_ref().as_str())
                .collect();
            format!(", apps: {}", names.join(", "))
        };
        format!("{shards}, policy {}{apps}", self.scheduler.policy)
    }
}

/// How long the pipelines may drain after the sources stopped, unless `[run]
/// drain_timeout_s` says otherwise.
pub const DEFAULT_DRAIN_SECONDS: f64 = 10.0;

/// The longest drain a file may ask for.
pub const MAX_DRAIN_SECONDS: f64 = 600.0;

/// The longest duration or SLO a file may set: about 115 days.
pub const MAX_SECONDS: f64 = 1e7;

/// The most partitions one operator or source may have. Every partition sends each of
/// its watermarks to every partition of the operators that read it, so the cost of a
/// watermark round grows with the square of the parallelism: at 128 an app on 2 shards
/// still keeps up with 10 000 records/s and drains at once; at 1024 its shards were busy
/// with watermarks alone, and at 4096 it produced nothing and never drained.
pub const MAX_PARTITIONS: u32 = 128;

/// A partition count must lie in `1..=MAX_PARTITIONS`.
fn partition_count(value: &Option<Spanned<u32>>, what: &str) -> Result<(), (Range<usize>, String)> {
    match value {
        Some(count) if !(1..=MAX_PARTITIONS).contains(count.get_ref()) => Err((
            count.span(),
            format!("{what} from 1 to {MAX_PARTITIONS}, not {}", count.get_ref()),
        )),
        _ => Ok(()),
    }
}

/// The most shards per CPU this process may run on: more only adds threads that take
/// turns on the same cores.
pub const MAX_SHARDS_PER_CPU: usize = 4;

/// The most shards whatever the machine.
pub const MAX_SHARDS: usize = 256;

/// The most shards on a machine where this process may run on `cpus` CPUs.
pub fn max_shards(cpus: usize) -> usize {
    (cpus.max(1) * MAX_SHARDS_PER_CPU).min(MAX_SHARDS)
}

/// The largest shard-to-shard ring, in messages.
pub const MAX_RING_CAPACITY: usize = 1 << 16;

/// The most messages all shard-to-shard rings hold together (their slots are allocated
/// when the runtime starts): 4 Mi.
pub const MAX_RING_SLOTS: usize = 1 << 22;

/// The largest intake queue and mailbox high-water mark, in messages.
pub const MAX_QUEUE: usize = 1 << 20;

/// The most CPU an operator may spend per record, ns (1 ms). A message carries up to
/// 1024 records and a shard finishes the message at hand before it stops, so this keeps
/// a stop's wait for a shard near a second.
pub const MAX_WORK_NS: u64 = 1_000_000;

/// The most lessees one actor may get.
pub const MAX_LESSEES: usize = 1024;

/// The most distinct keys a generator draws from.
pub const MAX_KEYS: u64 = 1 << 32;

/// The longest watermark lag, ms (a day): windows stay open, holding their state, until
/// the watermark passes them.
pub const MAX_OUT_OF_ORDERNESS_MS: u64 = 86_400_000;

/// The most sliding windows one record falls into (`size_ms / slide_ms`, rounded up):
/// each is a state entry and an output row.
pub const MAX_WINDOWS_PER_RECORD: u64 = 1000;

/// The longest interval between two timeline points, ms.
pub const MAX_SAMPLE_MS: u64 = 60_000;

/// `value`, when set, must lie in `range`; `what` and `unit` name it in the error.
fn in_range<T>(
    value: &Option<Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
    what: &str,
    unit: &str,
) -> Result<(), (Range<usize>, String)>
where
    T: PartialOrd + fmt::Display,
{
    match value {
        Some(value) if !range.contains(value.get_ref()) => Err((
            value.span(),
            format!(
                "{what} from {} to {} {unit}, not {}",
                range.start(),
                range.end(),
                value.get_ref()
            ),
        )),
        _ => Ok(()),
    }
}

/// `value` must not be set for this kind.
fn absent<T>(
    value: &Option<Spanned<T>>,
    key: &str,
    why: &str,
) -> Result<(), (Range<usize>, String)> {
    match value {
        Some(value) => Err((value.span(), format!("no `{key}` here: {why}"))),
        None => Ok(()),
    }
}

impl AppSection {
    fn check(&self, base_dir: &Path) -> Result<(), (Range<usize>, String)> {
        let name = self.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((
                self.name.span(),
                format!(
                    "a name of letters, digits, `-` and `_` (it names report files), not {name:?}"
                ),
            ));
        }
        if let Some(slo) = &self.slo_ms {
            let ms = *slo.get_ref();
            if !(ms > 0.0 && ms <= MAX_SECONDS * 1e3) {
                return Err((
                    slo.span(),
                    format!("an SLO above 0 ms and at most {MAX_SECONDS} s, not {ms}"),
                ));
            }
        }
        partition_count(&self.parallelism, "a parallelism")?;
        let source_kind = self.source().and_then(|source| source.get_ref().kind);
        match &self.query {
            Some(query) => {
                if !QUERIES.contains(&query.get_ref().as_str()) {
                    return Err((
                        query.span(),
                        format!(
                            "a NEXMark query, one of {}; not {:?}",
                            QUERIES.join(", "),
                            query.get_ref()
                        ),
                    ));
                }
                if let Some(operator) = self.operators.first() {
                    return Err((
                        operator.name.span(),
                        "no `[[app.operator]]` in an app that runs a `query`".into(),
                    ));
                }
                if let (Some(source), Some(kind)) = (self.source(), source_kind) {
                    if kind != SourceKind::Nexmark {
                        return Err((
                            source.span(),
                            "a `nexmark` source for a `query` (the default)".into(),
                        ));
                    }
                }
            }
            None => {
                for source in &self.sources {
                    let section = source.get_ref();
                    // Typed rows of the events (`crate::rows`) need no query.
                    if section.kind == Some(SourceKind::Nexmark) && section.schema.is_none() {
                        return Err((
                            source.span(),
                            "a `query`, or `schema = \"infer\"` for typed rows, for a `nexmark` source".into(),
                        ));
                    }
                }
                if self.operators.is_empty() && self.sources.is_empty() {
                    return Err((
                        self.name.span(),
                        "a `query`, or a `[app.source]` and `[[app.operator]]`s".into(),
                    ));
                }
            }
        }
        self.check_sources(base_dir)?;
        self.check_operators()?;
        let sink = &self.sink;
        if sink.kind != SinkKind::Nats {
            absent(&sink.nats, "nats", "only `nats` sinks publish to NATS")?;
        }
        match sink.kind {
            SinkKind::Nats => {
                absent(&sink.path, "path", "only `json-lines` sinks write a file")?;
                absent(&sink.connect, "connect", "only `tcp` sinks connect")?;
                absent(
                    &sink.write_timeout_ms,
                    "write_timeout_ms",
                    "only `tcp` sinks connect",
                )?;
                match &sink.nats {
                    None => {
                        return Err((
                            self.name.span(),
                            "a `[app.sink.nats]` table (url, stream, subject) for the app's `nats` sink".into(),
                        ))
                    }
                    Some(nats) => nats.get_ref().check_sink()?,
                }
            }
            SinkKind::Latency => {
                absent(&sink.path, "path", "only `json-lines` sinks write a file")?;
                absent(&sink.connect, "connect", "only `tcp` sinks connect")?;
                absent(
                    &sink.write_timeout_ms,
                    "write_timeout_ms",
                    "only `tcp` sinks connect",
                )?;
            }
            SinkKind::JsonLines | SinkKind::Csv => {
                absent(&sink.connect, "connect", "only `tcp` sinks connect")?;
                absent(
                    &sink.write_timeout_ms,
                    "write_timeout_ms",
                    "only `tcp` sinks connect",
                )?;
                if sink.path.is_none() {
                    return Err((
                        self.name.span(),
                        "a `path` for the app's `json-lines` (`-` for standard output) or `csv` sink".into(),
                    ));
                }
            }
            SinkKind::Tcp => {
                absent(&sink.path, "path", "only `json-lines` sinks write a file")?;
                within(
                    &sink.write_timeout_ms,
                    1..=600_000,
                    "milliseconds (up to 10 minutes)",
                )?;
                match &sink.connect {
                    None => {
                        return Err((
                            self.name.span(),
                            "a `connect` address for the app's `tcp` sink".into(),
                        ))
                    }
                    Some(address) => socket_address(address)?,
                };
            }
        }
        Ok(())
    }

    /// Each source's keys; with several, a unique `name` and a `schema` on each, and
    /// the app's dead-letter keys on the first alone.
    fn check_sources(&self, base_dir: &Path) -> Result<(), (Range<usize>, String)> {
        for source in &self.sources {
            source
                .get_ref()
                .check(source.span(), base_dir, self.query.is_some())?;
        }
        let several = self.sources.len() > 1;
        for (index, source) in self.sources.iter().enumerate() {
            let section = source.get_ref();
            if several {
                if let Some(query) = &self.query {
                    return Err((
                        query.span(),
                        "one source for a `query`: it reads the NEXMark events".into(),
                    ));
                }
                if section.name.is_none() {
                    return Err((
                        source.span(),
                        "a `name` for each of the app's sources (its operators read them by name)"
                            .into(),
                    ));
                }
                if section.schema.is_none() {
                    return Err((
                        source.span(),
                        "a `schema` on each of the app's sources: several sources are for \
                         pipelines of typed rows"
                            .into(),
                    ));
                }
                if index > 0 {
                    let why = "the app's dead letters go to one file, set on its first source";
                    absent(&section.dead_letters, "dead_letters", why)?;
                    absent(&section.dead_letter_max_bytes, "dead_letter_max_bytes", why)?;
                    absent(&section.dead_letter_max_per_s, "dead_letter_max_per_s", why)?;
                }
            }
            let Some(name) = &section.name else {
                continue;
            };
            let text = name.get_ref();
            if text.is_empty()
                || !text
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err((
                    name.span(),
                    "a source name of letters, digits, `-` and `_`".into(),
                ));
            }
            if (0..index).any(|earlier| self.source_name(earlier) == text) {
                return Err((
                    name.span(),
                    format!("a name no other source of the app has; `{text}` is taken"),
                ));
            }
            if self.operators.iter().any(|o| o.name.get_ref() == text) {
                return Err((
                    name.span(),
                    format!("a name no operator of the app has; `{text}` is an operator's"),
                ));
            }
        }
        Ok(())
    }

    /// Names unique, inputs that exist, no cycle, and each kind's parameters.
    fn check_operators(&self) -> Result<(), (Range<usize>, String)> {
        for (index, operator) in self.operators.iter().enumerate() {
            let name = operator.name.get_ref();
            if name == "source" || name.is_empty() {
                return Err((
                    operator.name.span(),
                    format!("an operator name other than {name:?}"),
                ));
            }
            if self.operators[..index]
                .iter()
                .any(|earlier| earlier.name.get_ref() == name)
            {
                return Err((
                    operator.name.span(),
                    format!("a name no other operator of the app has; `{name}` is taken"),
                ));
            }
            operator.check()?;
        }
        for (index, operator) in self.operators.iter().enumerate() {
            let Some(input) = &operator.input else {
                if index == 0 && self.sources.len() > 1 {
                    return Err((
                        operator.name.span(),
                        format!(
                            "an `input` for the first operator: the app has several sources, \
                             name the one it reads (one of: {})",
                            (0..self.sources.len())
                                .map(|at| self.source_name(at))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                continue;
            };
            let names = input.get_ref().names();
            if names.is_empty() {
                return Err((input.span(), "at least one input".into()));
            }
            for (position, name) in names.iter().enumerate() {
                if self.input_named(name).is_none() {
                    return Err((
                        input.span(),
                        format!(
                            "one of the app's sources or operators, one of: {}; there is no `{name}`",
                            self.input_names().join(", ")
                        ),
                    ));
                }
                if names[..position].contains(name) {
                    return Err((
                        input.span(),
                        format!("each input once; `{name}` is listed twice"),
                    ));
                }
                if *name == operator.name.get_ref() {
                    return Err((
                        input.span(),
                        format!("an input other than the operator itself: `{name}` reads from itself, a cycle"),
                    ));
                }
            }
        }
        // Following inputs from any operator must never come back to it.
        for (start, operator) in self.operators.iter().enumerate() {
            let mut seen = vec![false; self.operators.len()];
            let mut stack: Vec<usize> = self
                .inputs_of(start)
                .into_iter()
                .filter_map(Input::operator)
                .collect();
            while let Some(at) = stack.pop() {
                if at == start {
                    let input = operator
                        .input
                        .as_ref()
                        .map_or(operator.name.span(), Spanned::span);
                    return Err((
                        input,
                        format!(
                            "a DAG: `{}` reads, through its inputs, from its own output (a cycle)",
                            operator.name.get_ref()
                        ),
                    ));
                }
                if !std::mem::replace(&mut seen[at], true) {
                    stack.extend(self.inputs_of(at).into_iter().filter_map(Input::operator));
                }
            }
        }
        Ok(())
    }
}

/// Parses `HOST:PORT` (a numeric host).
pub fn socket_address(
    address: &Spanned<String>,
) -> Result<std::net::SocketAddr, (Range<usize>, String)> {
    let text = address.get_ref();
    if let Ok(port) = text.trim().parse::<u16>() {
        // A bare port: loopback, never a wildcard address by accident.
        return Ok(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            port,
        )));
    }
    text.parse().map_err(|_| {
        (
            address.span(),
            format!(
                "an address like 127.0.0.1:9000 (or a port alone, for 127.0.0.1), not {:?}",
                address.get_ref()
            ),
        )
    })
}

impl SourceSection {
    /// The source's kind, given whether its app runs a query.
    pub fn kind_for(&self, query: bool) -> SourceKind {
        self.kind.unwrap_or(if query {
            SourceKind::Nexmark
        } else {
            SourceKind::Generator
        })
    }

    /// A `nats` source's partitions: `partitions`, else 1.
    pub fn nats_partitions(&self) -> u32 {
        self.partitions.as_ref().map_or(1, |p| *p.get_ref())
    }

    /// How far watermarks trail the highest event time seen, ms.
    pub fn out_of_orderness_ms(&self) -> u64 {
        self.out_of_orderness_ms
            .as_ref()
            .map_or(0, |ms| *ms.get_ref())
    }

    fn check(
        &self,
        span: Range<usize>,
        base_dir: &Path,
        query: bool,
    ) -> Result<(), (Range<usize>, String)> {
        let kind = self.kind_for(query);
        if let Some(shape) = &self.shape {
            shape.get_ref().validate().map_err(|e| (shape.span(), e))?;
        }
        if let Some(keys) = &self.keys {
            keys.get_ref().validate().map_err(|e| (keys.span(), e))?;
            if keys.get_ref().keys() > MAX_KEYS {
                return Err((
                    keys.span(),
                    format!("at most {MAX_KEYS} keys, not {}", keys.get_ref().keys()),
                ));
            }
        }
        in_range(
            &self.out_of_orderness_ms,
            0..=MAX_OUT_OF_ORDERNESS_MS,
            "an out-of-orderness bound",
            "ms",
        )?;
        partition_count(&self.partitions, "a partition count")?;
        let reads = matches!(kind, SourceKind::File | SourceKind::Tcp | SourceKind::Nats);
        if reads {
            absent(&self.keys, "keys", "only `generator` sources draw keys")?;
            absent(
                &self.shape,
                "shape",
                "file, tcp and nats sources read as fast as records come",
            )?;
            absent(
                &self.events,
                "events",
                "file, tcp and nats sources end with their input",
            )?;
        }
        if kind == SourceKind::Nexmark {
            absent(&self.keys, "keys", "NEXMark events carry their own keys")?;
        }
        self.check_limits(kind)?;
        if kind != SourceKind::Nats {
            absent(&self.nats, "nats", "only `nats` sources read from NATS")?;
        }
        match kind {
            SourceKind::Nats => {
                absent(&self.path, "path", "only `file` sources read a file")?;
                absent(&self.listen, "listen", "only `tcp` sources listen")?;
                match &self.nats {
                    None => return Err((
                        span,
                        "a `[app.source.nats]` table (url, stream, consumer) for the `nats` source"
                            .into(),
                    )),
                    Some(nats) => nats.get_ref().check_source(self.nats_partitions())?,
                }
            }
            SourceKind::File => {
                absent(&self.listen, "listen", "only `tcp` sources listen")?;
                match &self.path {
                    None => return Err((span, "a `path` for the `file` source".into())),
                    Some(path) if !base_dir.join(path.get_ref()).is_file() => {
                        return Err((
                            path.span(),
                            format!(
                                "a file that exists (relative to the config's folder); {} does not",
                                base_dir.join(path.get_ref()).display()
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
            SourceKind::Tcp => {
                absent(&self.path, "path", "only `file` sources read a file")?;
                match &self.listen {
                    None => return Err((span, "a `listen` address for the `tcp` source".into())),
                    Some(address) => {
                        socket_address(address)?;
                    }
                }
            }
            SourceKind::Generator | SourceKind::Nexmark => {
                absent(&self.path, "path", "only `file` sources read a file")?;
                absent(&self.listen, "listen", "only `tcp` sources listen")?;
            }
        }
        Ok(())
    }
}

/// The most a `[app.source]` byte or connection limit may be set to.
const MAX_CONNECTIONS: usize = 65_536;
const MAX_FRAME_BYTES: usize = 64 << 20;

/// `value`, when given, must lie in `range`; `what` says what it is.
fn within<T: PartialOrd + std::fmt::Display + Copy>(
    value: &Option<Spanned<T>>,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<(), (Range<usize>, String)> {
    match value {
        Some(value) if !range.contains(value.get_ref()) => Err((
            value.span(),
            format!(
                "{what} from {} to {}, not {}",
                range.start(),
                range.end(),
                value.get_ref()
            ),
        )),
        _ => Ok(()),
    }
}

impl SourceSection {
    /// The bounds of the dead-letter and TCP keys, and where they apply.
    fn check_limits(&self, kind: SourceKind) -> Result<(), (Range<usize>, String)> {
        if !matches!(kind, SourceKind::File | SourceKind::Tcp | SourceKind::Nats) {
            let why = "only `file`, `tcp` and `nats` sources write dead letters";
            absent(&self.dead_letter_max_bytes, "dead_letter_max_bytes", why)?;
            absent(&self.dead_letter_max_per_s, "dead_letter_max_per_s", why)?;
        }
        if kind != SourceKind::Tcp {
            let why = "only `tcp` sources take connections";
            absent(&self.max_connections, "max_connections", why)?;
            absent(&self.max_frame_bytes, "max_frame_bytes", why)?;
            absent(&self.idle_timeout_ms, "idle_timeout_ms", why)?;
            absent(&self.token, "token", why)?;
        }
        within(
            &self.dead_letter_max_bytes,
            0..=1 << 40,
            "a number of bytes",
        )?;
        within(
            &self.dead_letter_max_per_s,
            1..=1_000_000,
            "letters per second",
        )?;
        within(
            &self.max_connections,
            1..=MAX_CONNECTIONS,
            "a number of connections",
        )?;
        within(
            &self.max_frame_bytes,
            1..=MAX_FRAME_BYTES,
            "a number of bytes",
        )?;
        within(
            &self.idle_timeout_ms,
            1..=86_400_000,
            "milliseconds (up to a day)",
        )?;
        if let Some(token) = &self.token {
            let text = &token.get_ref().0;
            if text.is_empty() || text.len() > 1024 || text.contains(['\n', '\r']) {
                return Err((
                    token.span(),
                    "a token of 1 to 1024 bytes, without line breaks".into(),
                ));
            }
        }
        Ok(())
    }
}

impl OperatorSection {
    fn check(&self) -> Result<(), (Range<usize>, String)> {
        let kind = *self.kind.get_ref();
        partition_count(&self.parallelism, "a parallelism")?;
        if !kind.is_stateful() {
            absent(&self.state, "state", "stateless operators keep no state")?;
        }
        if let Some(work) = &self.work_ns {
            if *work.get_ref() > MAX_WORK_NS {
                return Err((
                    work.span(),
                    format!(
                        "at most 1 ms ({MAX_WORK_NS} ns) of work per record, not {} ns",
                        work.get_ref()
                    ),
                ));
            }
        }
        if kind == OperatorKind::Filter && self.condition.is_none() {
            match &self.keep_percent {
                None => {
                    return Err((
                        self.kind.span(),
                        "a `keep_percent` (0 to 100) for a `filter`".into(),
                    ))
                }
                Some(percent) if *percent.get_ref() > 100 => {
                    return Err((
                        percent.span(),
                        format!("a share from 0 to 100 percent, not {}", percent.get_ref()),
                    ))
                }
                Some(_) => {}
            }
        } else if kind != OperatorKind::Filter {
            absent(
                &self.keep_percent,
                "keep_percent",
                "only `filter` keeps a share",
            )?;
        }
        if kind == OperatorKind::Union {
            let why = "a `union` passes records on as they come";
            absent(&self.work_ns, "work_ns", why)?;
            let inputs = self.input.as_ref().map_or(0, |i| i.get_ref().names().len());
            if inputs < 2 {
                return Err((
                    self.input.as_ref().map_or(self.kind.span(), Spanned::span),
                    format!(
                        "two inputs or more for a `union`, such as `input = [\"left\", \"right\"]`; it has {}",
                        inputs.max(1)
                    ),
                ));
            }
        }
        if kind != OperatorKind::Map {
            absent(
                &self.panic_on_value,
                "panic_on_value",
                "only `map` can be told to panic",
            )?;
        }
        if self.panic_on_value.is_none() {
            absent(
                &self.panic_times,
                "panic_times",
                "`panic_times` only counts the panics of `panic_on_value`",
            )?;
        }
        if kind.is_windowed() {
            match &self.window {
                None => {
                    return Err((
                        self.kind.span(),
                        "a `window` (tumbling, sliding or session) for a windowed operator".into(),
                    ))
                }
                Some(window) => {
                    let bad = match *window.get_ref() {
                        WindowConfig::Tumbling { size_ms, .. } => {
                            (size_ms == 0).then(|| "a window size of at least 1 ms".to_string())
                        }
                        WindowConfig::Sliding {
                            size_ms, slide_ms, ..
                        } => {
                            if size_ms == 0 || slide_ms == 0 {
                                Some("a size and a slide of at least 1 ms".to_string())
                            } else if slide_ms > size_ms {
                                Some(format!("a slide no longer than the size ({slide_ms} ms > {size_ms} ms)"))
                            } else if size_ms.div_ceil(slide_ms) > MAX_WINDOWS_PER_RECORD {
                                Some(format!(
                                    "at most {MAX_WINDOWS_PER_RECORD} windows per record \
                                     (size_ms / slide_ms); {size_ms} ms sliding by {slide_ms} ms \
                                     puts each record in {}",
                                    size_ms.div_ceil(slide_ms)
                                ))
                            } else {
                                None
                            }
                        }
                        WindowConfig::Session { gap_ms } => {
                            (gap_ms == 0).then(|| "a session gap of at least 1 ms".to_string())
                        }
                    };
                    let longest = match *window.get_ref() {
                        WindowConfig::Tumbling { size_ms, .. } => size_ms,
                        WindowConfig::Sliding {
                            size_ms, slide_ms, ..
                        } => size_ms.max(slide_ms),
                        WindowConfig::Session { gap_ms } => gap_ms,
                    };
                    let limit_ms = (MAX_SECONDS * 1e3) as u64;
                    let bad = bad.or_else(|| {
                        (longest > limit_ms)
                            .then(|| format!("windows of at most {limit_ms} ms, not {longest} ms"))
                    });
                    if let Some(message) = bad {
                        return Err((window.span(), message));
                    }
                }
            }
        } else {
            absent(
                &self.window,
                "window",
                "only windowed operators have windows",
            )?;
            absent(
                &self.row_order,
                "row_order",
                "only windowed operators order their rows",
            )?;
        }
        Ok(())
    }
}

fn available_cpus() -> Vec<usize> {
    dirigo_runtime::placement::available_cpus()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            "[runtime]\nshards = 2\nring_capacity = 512\nmailbox_high_water = 2048\nspin_budget_us = 50\nturn_budget_us = 20\ntransparent_huge_pages = true\nrelease_freed_memory = true\n\n[scheduler]\npolicy = \"dirigo\"\nheadroom = 0.5\n",
        )
        .unwrap();
        assert_eq!(config.scheduler.policy, PolicyName::Dirigo);
        assert_eq!(config.summary(), "2 shards, policy dirigo");
        assert_eq!(config.runtime.release_freed_memory, Some(true));
        let _builder = config.apply(dirigo_runtime::Runtime::<u32>::builder());
    }

    #[test]
    fn only_a_map_can_be_told_to_panic() {
        let config = parse(
            "[[app]]\nname = \"a\"\n\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\npanic_on_value = 13\n",
        )
        .unwrap();
        let operator = &config.apps[0].operators[0];
        assert_eq!(
            operator.panic_on_value.as_ref().map(|v| *v.get_ref()),
            Some(13)
        );
        let error = parse(
            "[[app]]\nname = \"a\"\n\n[[app.operator]]\nname = \"f\"\nkind = \"filter\"\nkeep_percent = 5\npanic_on_value = 13\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("test.toml:8:18:") && error.contains("only `map`"),
            "{error}"
        );
    }

    #[test]
    fn errors_point_at_the_value() {
        let error = parse("[runtime]\nshards = \"two\"\n").unwrap_err();
        assert!(error.to_string().starts_with("test.toml:2:"), "{error}");
        let error = parse("[runtime]\nshard = 2\n").unwrap_err();
        assert!(error.to_string().starts_with("test.toml:2:1:"), "{error}");
        let error = parse("[runtime]\ncpus = [0, 0]\n").unwrap_err().to_string();
        assert!(
            error.starts_with("test.toml:2:12:") && error.contains("twice"),
            "{error}"
        );
        let error = parse("[runtime]\ncpus = [0, 4096]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml:2:12:") && error.contains("4096"),
            "{error}"
        );
        let error = parse("[scheduler]\npolicy = \"fastest\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.toml:2:"), "{error}");
        let error = parse("\n\n[scheduler]\nheadroom = 3.0\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.toml:4:12:"), "{error}");
        let error = parse("[runtime]\nshards = 0\n").unwrap_err().to_string();
        assert!(error.starts_with("test.toml:2:10:"), "{error}");
        let error = parse("[runtime]\nmailbox_high_water = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml:2:22:") && error.contains("mailbox high-water"),
            "{error}"
        );
        let error = parse("[runtime]\ntransparent_huge_pages = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.toml:2:26:"), "{error}");
        let error = parse(
            "[[app]]\nname = \"a\"\n\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nrow_order = \"any\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("test.toml:7:13:") && error.contains("row_order"),
            "{error}"
        );
        let error = parse(
            "[[app]]\nname = \"a\"\n\n[[app.operator]]\nname = \"w\"\nkind = \"window_count\"\nwindow = { kind = \"tumbling\", size_ms = 10 }\nrow_order = \"sideways\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.starts_with("test.toml:8:13:"), "{error}");
        let error = parse("[runtime]\nrelease_freed_memory = 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.toml:2:24:"), "{error}");
        let error = parse("[[app]]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(
            error.starts_with("test.toml:2:8:") && error.contains("query"),
            "{error}"
        );
    }

    /// Settings that crashed, ran away or sized memory and threads without end, each
    /// with where its error must point.
    const OUT_OF_BOUNDS: &[(&str, &str)] = &[
        ("[runtime]\nring_capacity = 9223372036854775807\n", "2:17"),
        ("[runtime]\nshards = 10000\n", "2:10"),
        ("[runtime]\nmailbox_high_water = 99999999\n", "2:22"),
        ("[runtime]\nintake_capacity = 99999999\n", "2:19"),
        ("[runtime]\nspin_budget_us = 99999999\n", "2:18"),
        ("[runtime]\nturn_budget_us = 0\n", "2:18"),
        ("[runtime]\nturn_budget_us = 99999999\n", "2:18"),
        ("[runtime]\npark_timeout_ms = 99999999\n", "2:19"),
        ("[runtime]\nidle_deactivation_s = 99999999999\n", "2:23"),
        ("[runtime]\nhandler_warning_ms = 99999999999\n", "2:22"),
        ("[scheduler]\nretire_after_ms = 99999999999\n", "2:19"),
        ("[scheduler]\nmax_lessees = 99999\n", "2:15"),
        ("[run]\ndrain_timeout_s = 0\n", "2:19"),
        ("[run]\ndrain_timeout_s = 1e9\n", "2:19"),
        ("[report]\nsample_ms = 999999999\n", "2:13"),
        ("[[app]]\nname = \"a\"\nparallelism = 4096\nquery = \"q1\"\n", "3:15"),
        ("[[app]]\nname = \"a\"\n[app.source]\npartitions = 4096\n", "4:14"),
        (
            "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"constant\", rate = 1e-300 }\n",
            "4:9",
        ),
        (
            "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"poisson\", rate = 1e300 }\n",
            "4:9",
        ),
        (
            "[[app]]\nname = \"a\"\n[app.source]\nkeys = { dist = \"uniform\", keys = 99999999999999 }\n",
            "4:8",
        ),
        (
            "[[app]]\nname = \"a\"\n[app.source]\nout_of_orderness_ms = 99999999999\n",
            "4:23",
        ),
        (
            "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_count\"\nwindow = { kind = \"sliding\", size_ms = 10000000000, slide_ms = 1 }\n",
            "6:10",
        ),
        (
            "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_sum\"\nwindow = { kind = \"sliding\", size_ms = 1001, slide_ms = 1 }\n",
            "6:10",
        ),
        (
            "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nwork_ns = 2000000\n",
            "6:11",
        ),
        (
            "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nparallelism = 4096\n",
            "6:15",
        ),
    ];

    /// Every numeric setting, its value `N`.
    const NUMERIC_KEYS: &[&str] = &[
        "[runtime]\nshards = N\n",
        "[runtime]\nring_capacity = N\n",
        "[runtime]\nmailbox_high_water = N\n",
        "[runtime]\nspin_budget_us = N\n",
        "[runtime]\nturn_budget_us = N\n",
        "[runtime]\npark_timeout_ms = N\n",
        "[runtime]\nidle_deactivation_s = N\n",
        "[runtime]\nintake_capacity = N\n",
        "[runtime]\nhandler_warning_ms = N\n",
        "[scheduler]\npolicy = \"dirigo\"\nheadroom = N\n",
        "[scheduler]\npolicy = \"dirigo\"\nretire_after_ms = N\n",
        "[scheduler]\npolicy = \"dirigo\"\nmax_lessees = N\n",
        "[scheduler]\npolicy = \"dirigo\"\nbest_effort_spread_above = N\n",
        "[run]\nduration_s = N\n",
        "[run]\ndrain_timeout_s = N\n",
        "[report]\nsample_ms = N\n",
        "[[app]]\nname = \"a\"\nslo_ms = N\nquery = \"q1\"\n",
        "[[app]]\nname = \"a\"\nparallelism = N\nquery = \"q1\"\n",
        "[[app]]\nname = \"a\"\n[app.source]\nevents = N\nseed = 1\n",
        "[[app]]\nname = \"a\"\n[app.source]\nseed = N\n",
        "[[app]]\nname = \"a\"\n[app.source]\nout_of_orderness_ms = N\n",
        "[[app]]\nname = \"a\"\n[app.source]\npartitions = N\n",
        "[[app]]\nname = \"a\"\n[app.source]\nkeys = { dist = \"zipf\", keys = N, exponent = 1.0 }\n",
        "[[app]]\nname = \"a\"\n[app.source]\nkeys = { dist = \"zipf\", keys = 10, exponent = N }\n",
        "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"constant\", rate = N }\n",
        "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"step\", from = 1, to = N, at_s = N }\n",
        "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"sine\", mean = 10, amplitude = 1, period_s = N }\n",
        "[[app]]\nname = \"a\"\n[app.source]\nshape = { shape = \"bursts\", base = 1, burst = N, every_s = 10, length_s = 1 }\n",
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nwork_ns = N\nparallelism = 1\n",
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nparallelism = N\n",
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"f\"\nkind = \"filter\"\nkeep_percent = N\n",
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_sum\"\nwindow = { kind = \"sliding\", size_ms = N, slide_ms = 1 }\n",
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_sum\"\nwindow = { kind = \"tumbling\", size_ms = N }\n",
        "[[app]]\nname = \"a\"\n[[app.operator]]\nname = \"w\"\nkind = \"window_sum\"\nwindow = { kind = \"session\", gap_ms = N }\n",
    ];

    #[test]
    fn every_bound_points_at_its_value() {
        for (text, place) in OUT_OF_BOUNDS {
            let error = parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("test.toml:{place}: ")),
                "{text:?}: {error}"
            );
        }
        // At the bounds, accepted.
        parse("[runtime]\nring_capacity = 65536\nshards = 2\nmailbox_high_water = 1048576\nintake_capacity = 1048576\npark_timeout_ms = 60000\n[run]\ndrain_timeout_s = 600\n[report]\nsample_ms = 60000\n[[app]]\nname = \"a\"\nparallelism = 128\n[[app.operator]]\nname = \"w\"\nkind = \"window_sum\"\nwork_ns = 1000000\nwindow = { kind = \"sliding\", size_ms = 1000, slide_ms = 1 }\n").unwrap();
    }

    #[test]
    fn shards_and_rings_are_bounded_by_the_machine() {
        let check = |text: &str, cpus: usize| {
            let config: Config = toml::from_str(text).unwrap();
            config
                .check(&(0..cpus).collect::<Vec<_>>())
                .map_err(|(span, message)| (position(text, span.start), message))
        };
        assert_eq!(max_shards(1), 4);
        assert_eq!(max_shards(2), 8);
        assert_eq!(max_shards(1000), MAX_SHARDS);
        check("[runtime]\nshards = 8\n", 2).unwrap();
        let (at, message) = check("[runtime]\nshards = 9\n", 2).unwrap_err();
        assert_eq!(at, (2, 10));
        assert!(message.contains("at most 8 shards"), "{message}");
        // 64 shards have 4032 rings: 1024 slots each fit, 2048 do not.
        check("[runtime]\nshards = 64\nring_capacity = 1024\n", 64).unwrap();
        let (at, message) =
            check("[runtime]\nshards = 64\nring_capacity = 1025\n", 64).unwrap_err();
        assert_eq!(at, (3, 17));
        assert!(message.contains("4032 rings of 2048"), "{message}");
    }

    #[test]
    fn files_that_are_not_text_files_are_refused_with_a_position() {
        let dir = std::env::temp_dir().join(format!("dirigo-config-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let invalid = dir.join("invalid.toml");
        std::fs::write(&invalid, b"[runtime]\nshards = 2 # \xC3\x28\n").unwrap();
        let error = Config::load(&invalid).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!("{}:2:14: UTF-8", invalid.display())),
            "{error}"
        );
        let large = dir.join("large.toml");
        std::fs::write(&large, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let error = Config::load(&large).unwrap_err().to_string();
        assert!(
            error.contains(":1:1: a configuration of at most"),
            "{error}"
        );
        let error = Config::load(&dir).unwrap_err().to_string();
        assert!(
            error.contains(":1:1: a regular file") && error.contains("folder"),
            "{error}"
        );
        let error = Config::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("/dev/zero:1:1: a regular file"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// No input makes the loader panic: valid files with bytes replaced, inserted or
        /// cut give a config or an error with a position inside the file.
        #[test]
        fn mutated_files_never_panic(
            position in 0usize..600,
            byte in any::<u8>(),
            mode in 0u8..3,
        ) {
            let valid = "[runtime]\nshards = 2\nring_capacity = 1024\n\n[scheduler]\npolicy = \"edf\"\nheadroom = 0.75\n\n[run]\nduration_s = 5\n\n[[app]]\nname = \"a\"\nslo_ms = 20\nparallelism = 2\n\n[app.source]\nshape = { shape = \"step\", from = 100, to = 500, at_s = 1 }\nkeys = { dist = \"zipf\", keys = 100, exponent = 1.1 }\n\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\nwork_ns = 10\n\n[[app.operator]]\nname = \"w\"\nkind = \"window_sum\"\ninput = \"m\"\nwindow = { kind = \"sliding\", size_ms = 10, slide_ms = 5 }\nrow_order = \"any\"\n\n[[app]]\nname = \"q\"\nquery = \"q5\"\n\n[app.sink]\nkind = \"json-lines\"\npath = \"-\"\n";
            prop_assert!(parse(valid).is_ok(), "{:?}", parse(valid).err());
            let mut bytes = valid.as_bytes().to_vec();
            let at = position % bytes.len();
            match mode {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Err(error) = parse(&text) {
                if let Some((line, _)) = error.position {
                    prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{}", error);
                }
            }
        }

        /// No number makes the loader panic: every numeric key takes extreme values; a
        /// refusal has a position, and what is accepted configures a runtime builder.
        #[test]
        fn extreme_numbers_never_panic(
            key in 0usize..NUMERIC_KEYS.len(),
            value in prop_oneof![
                Just("0".to_string()),
                Just("-1".to_string()),
                Just("9223372036854775807".to_string()),
                Just("18446744073709551615".to_string()),
                Just("1e-300".to_string()),
                Just("1e300".to_string()),
                Just("nan".to_string()),
                Just("inf".to_string()),
                Just("0.5".to_string()),
                any::<u64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|x| format!("{x:?}")),
            ],
        ) {
            let text = NUMERIC_KEYS[key].replace("N", &value);
            match parse(&text) {
                Ok(config) => {
                    let _builder = config.apply(dirigo_runtime::Runtime::<u32>::builder());
                    let _ = config.duration();
                    let _ = config.drain_timeout();
                }
                Err(error) => {
                    prop_assert!(error.position.is_some(), "{}", error);
                }
            }
        }
    }
}
