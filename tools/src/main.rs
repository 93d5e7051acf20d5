//! The `dirigo` command.
//!
//! - `dirigo` (no arguments): runs the embedded `configs/default.toml` (a latency-critical
//!   app and a throughput app sharing the shards, about 15 s) and writes its report into
//!   `./dirigo-report/`;
//! - `dirigo run CONFIG [--duration 5s] [--report PATH] [--out DIR] [--metrics ADDRESS]
//!   [--fail-on-slo[=PERCENT]]`: runs the apps of a configuration, serves its live metrics
//!   and page when asked (see `live`), and writes the report, the `.hgrm` and `.hlog`
//!   files and the plots into one folder (see `run`, `report` and `plot`);
//! - `dirigo report REPORT.json --out DIR`: draws the plots of a saved report again;
//! - `dirigo demo`: a keyed word count that runs actors across shards and prints what each
//!   shard did;
//! - `dirigo validate CONFIG`: checks a TOML configuration (exit code 2 and
//!   `FILE:LINE:COLUMN: what was expected` when it is wrong; see `config`);
//! - `dirigo bench mesh [--json PATH]`: the mesh benchmark (see `dirigo_bench::mesh`);
//! - `dirigo bench consolidate [--json PATH]`: the cost of merging a lessee's partial
//!   state, read in place from its rkyv archive against copied out of it first (see
//!   `dirigo_bench::consolidate`);
//! - `dirigo bench lessee [--json PATH]` and `dirigo bench barrier [--json PATH]`: a
//!   mergeable operator with and without a lessee, and the round trip of a barrier (see
//!   `dirigo_bench::dual`);
//! - `dirigo bench scale-step [--json PATH]`: the `dirigo` policy under a load step (see
//!   `dirigo_bench::scale`);
//! - `dirigo bench slo [--json PATH]`: three tenants under `fifo`, `edf` and `dirigo` (see
//!   `dirigo_bench::slo`);
//! - `dirigo bench isolation [--json PATH]`: a latency-critical app beside a bursty heavy
//!   app in dirigo's policies and in timely-dataflow (see `dirigo_bench::isolation`);
//! - `dirigo bench soak [--seconds 60] [--json PATH]`: twice the sustainable load with
//!   backpressure, then with shedding (see `dirigo_bench::soak`);
//! - `dirigo bench scrape [--json PATH]`: a latency-critical app with `/metrics` scraped
//!   10 times a second against not scraped, alternating (see `bench_scrape`);
//! - `dirigo bench nats [--rounds N] [--json PATH]`: publisher → NATS JetStream →
//!   subscriber, through the broker alone, relayed by a bare client, and relayed by dirigo
//!   (see `dirigo_bench::nats`).

mod allocator;
mod apps;
mod bench_scrape;
mod bench_toml;
mod config;
mod demo;
mod exit;
mod live;
mod logging;
mod plot;
mod report;
mod rows;
mod run;
mod signals;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use exit::Exit;

#[derive(Parser)]
#[command(
    name = "dirigo",
    version,
    about = "A thread-per-core stream-processing runtime for one machine, built for tail latency.",
    after_help = "Examples:\n  dirigo                              run configs/default.toml (built in), report in ./dirigo-report/\n  dirigo run configs/nexmark.toml --duration 5s --report out.json\n  dirigo validate configs/default.toml\n  dirigo report dirigo-report/report.json --out plots/\n  dirigo demo --shards 4 --events 2000000\n  dirigo bench nexmark --query q5 --json q5.json\n                                      a NEXMark query: throughput, then latency at two loads\n  dirigo bench peer --json peer.json  the same windowed count in dirigo and timely-dataflow\n  dirigo bench mesh --json mesh.json  measure shard-to-shard hops against their floors\n  dirigo bench consolidate --json consolidate.json\n                                      merge partial state in place vs. copied\n  dirigo bench lessee --json lessee.json\n                                      throughput of a lessor alone vs. with a lessee\n  dirigo bench barrier --json barrier.json\n                                      block, consolidate, run a critical message, resume\n  dirigo bench scale-step --json scale-step.json\n                                      a load step past one shard: how fast a lessee arrives\n  dirigo bench slo --json slo.json    three tenants, three policies: SLOs met, cores held"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// How logs are written to standard error: `text`, or `json` (one object per line,
    /// with spans) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the apps of a TOML configuration: print a summary table and write the JSON
    /// report, a `.hgrm` file per app and SVG plots (latency CDF, busy cores, lessees).
    #[command(
        after_help = "Examples:\n  dirigo run configs/default.toml\n  dirigo run configs/nexmark.toml --duration 5s --report q5.json\n\nA bad configuration exits with code 2 and FILE:LINE:COLUMN: what was expected."
    )]
    Run {
        /// The configuration file.
        config: PathBuf,
        /// How long the sources run (`5s`, `500ms`, `2m`); overrides `[run] duration_s`.
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        /// Where the JSON report goes; overrides `[report] json`. The run's other files
        /// go next to it unless `--out` says otherwise.
        #[arg(long, value_name = "PATH")]
        report: Option<PathBuf>,
        /// The folder for every file of the run (report, `.hgrm`, `.hlog`, plots, dead
        /// letters); overrides `[report] dir`.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Serve Prometheus metrics (`/metrics`), the live page (`/`) and `/api/status`
        /// on this address while the run goes on (`127.0.0.1:9898`, or a port alone for
        /// loopback; port 0 picks a free one); overrides `[metrics] listen`.
        #[arg(long, value_name = "ADDRESS")]
        metrics: Option<String>,
        /// Exit with code 6 when an app with an SLO delivers less than PERCENT of its
        /// outputs within it (default 99): for CI pipelines that gate on latency.
        #[arg(long, value_name = "PERCENT", num_args = 0..=1, default_missing_value = "99",
              value_parser = percent)]
        fail_on_slo: Option<f64>,
        /// With `[checkpoint]`: delete the checkpoints and start from scratch (asks first
        /// on a terminal, unless `--yes`).
        #[arg(long)]
        from_scratch: bool,
        /// Answer yes to `--from-scratch`'s question.
        #[arg(long)]
        yes: bool,
        /// With `[checkpoint]`: apps whose checkpointed state no longer fits them
        /// (operators or partition counts changed) start from scratch instead of the
        /// run being refused.
        #[arg(long)]
        allow_state_drop: bool,
    },
    /// List the checkpoints in a directory: id, time, size, apps, complete or not.
    #[command(after_help = "Example:\n  dirigo checkpoints state/")]
    Checkpoints {
        /// The checkpoint directory (`[checkpoint] dir`).
        dir: PathBuf,
    },
    /// Print the summary table of a saved JSON report and draw its SVG plots again.
    #[command(after_help = "Example:\n  dirigo report dirigo-report/report.json --out plots/")]
    Report {
        /// A report written by `dirigo run`.
        report: PathBuf,
        /// The folder for the plots.
        #[arg(long, value_name = "DIR", default_value = "dirigo-report")]
        out: PathBuf,
    },
    /// Run the built-in demo: keyed counters and a ring of relays spread over the shards.
    #[command(after_help = "Example:\n  dirigo demo --shards 2 --events 1000000")]
    Demo(demo::DemoArgs),
    /// Check a TOML configuration file: exit code 0 and a summary when it is valid, exit
    /// code 2 and `FILE:LINE:COLUMN: what was expected` when it is not.
    #[command(after_help = "Example:\n  dirigo validate configs/runtime.toml")]
    Validate {
        /// The configuration file.
        config: PathBuf,
    },
    /// Run a benchmark scenario.
    Bench {
        #[command(subcommand)]
        scenario: BenchScenario,
    },
}

#[derive(Subcommand)]
enum BenchScenario {
    /// Shard-to-shard round trips and one-way throughput, next to the hardware floor,
    /// futex wake-ups, glommio's shared_channel and flume, in one run.
    #[command(after_help = "Example:\n  dirigo bench mesh --json mesh.json")]
    Mesh {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Round trips per spinning series.
        #[arg(long, default_value_t = 200_000)]
        round_trips: usize,
        /// Round trips per parked series.
        #[arg(long, default_value_t = 5_000)]
        parked_round_trips: usize,
        /// Messages per one-way throughput run.
        #[arg(long, default_value_t = 4_000_000)]
        messages: u64,
    },
    /// Merge a lessee's partial state (a per-key count map) into its lessor at 1 KiB,
    /// 64 KiB, 1 MiB and 16 MiB: read in place from the rkyv archive, against
    /// deserializing it into an owned state first, in one run.
    #[command(after_help = "Example:\n  dirigo bench consolidate --json consolidate.json")]
    Consolidate {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Timed rounds per size (the median is reported).
        #[arg(long, default_value_t = 25)]
        repetitions: usize,
        /// Skip sizes above this many bytes (for quick runs).
        #[arg(long, value_name = "BYTES", hide = true)]
        max_bytes: Option<usize>,
        /// Keys in the lessor state per key in the partial state.
        #[arg(long, default_value_t = 2, value_name = "N")]
        lessor_keys_per_partial_key: usize,
        /// Share of the partial state's keys that the lessor has never seen, in percent.
        #[arg(long, default_value_t = 5, value_name = "PERCENT")]
        new_key_percent: u32,
    },
    /// Throughput of a CPU-heavy mergeable operator (per-key histograms, about 2 µs per
    /// record) on 2 shards: its lessor alone against lessor + 1 lessee, in alternating
    /// rounds; reports `speedup`.
    #[command(after_help = "Example:
  dirigo bench lessee --json lessee.json")]
    Lessee {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Records per round.
        #[arg(long, default_value_t = 200_000)]
        records: u64,
        /// Alternating rounds of each configuration (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// CPU per record, in nanoseconds (calibrated on this machine).
        #[arg(long, default_value_t = 2_000)]
        work_ns: u64,
    },
    /// The round trip of a barrier with one lessee on busy shards: block, collect the
    /// lessee's partial state, merge, run the critical message, resume.
    #[command(after_help = "Example:
  dirigo bench barrier --json barrier.json")]
    Barrier {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Barriers to measure.
        #[arg(long, default_value_t = 20_000)]
        barriers: u64,
        /// Records between two critical messages.
        #[arg(long, default_value_t = 64)]
        critical_every: u64,
        /// CPU per record, in nanoseconds (calibrated on this machine).
        #[arg(long, default_value_t = 200)]
        work_ns: u64,
        /// Nanoseconds between two records (open loop).
        #[arg(long, default_value_t = 400)]
        interval_ns: u64,
    },
    /// Three tenants on two shards — a latency-critical app and two bursty analytics
    /// apps — under `fifo` and `edf` with static parallelism and under `dirigo` starting
    /// without lessees: satisfaction, latency, and core-seconds reserved and busy.
    #[command(after_help = "Example:\n  dirigo bench slo --json slo.json")]
    Slo {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Seconds each policy runs per round.
        #[arg(long, default_value_t = 8.0)]
        seconds: f64,
        /// Rounds, each running every policy once (in rotated order); the table and the
        /// `policies` JSON give the medians over them.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// A latency-critical filter beside a bursty sliding-window count on two cores, in
    /// dirigo under `fifo`, `edf` and `dirigo` and in timely-dataflow, at the same offered
    /// loads in alternating rounds: the critical app's tail and SLO satisfaction, the heavy
    /// app's throughput and tail.
    #[command(after_help = "Example:\n  dirigo bench isolation --json isolation.json")]
    Isolation {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Seconds of offered load per run.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Rounds, each running every system once (in rotated order).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The heavy app's mean rate, records per second (default: half its throughput
        /// alone on dirigo, measured first).
        #[arg(long, value_name = "RECORDS_PER_S", value_parser = positive_rate)]
        heavy_rate: Option<f64>,
        /// The critical app's rate, records per second.
        #[arg(long, default_value_t = 10_000.0, value_parser = positive_rate)]
        critical_rate: f64,
        /// The critical app's latency target, microseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        critical_slo_us: u64,
        /// The heavy app's mean rate as a share of its throughput alone (when
        /// `--heavy-rate` is not given).
        #[arg(long, default_value_t = 0.5)]
        heavy_share: f64,
        /// The heavy app's burst rate over its mean rate.
        #[arg(long, default_value_t = 3.0)]
        burst_factor: f64,
        /// Keys of the heavy app.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        keys: u64,
        /// The heavy app's sliding window width, ms of event time.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        window_ms: u64,
        /// The distance between the heavy app's window starts, ms (at least a
        /// hundredth of the width).
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        slide_ms: u64,
    },
    /// Twice the load an app sustains, with backpressure and then with shedding, each for
    /// `--seconds`: checks for deadlock, memory growth, lost records and a slow stop.
    #[command(after_help = "Example:\n  dirigo bench soak --seconds 60 --json soak.json")]
    Soak {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Seconds each phase runs (1 to 3600).
        #[arg(long, default_value_t = 60.0)]
        seconds: f64,
    },
    /// What a Prometheus scrape costs: a latency-critical app with `/metrics` scraped 10
    /// times a second against not scraped, in alternating runs; reports the p99 ratio.
    #[command(after_help = "Example:\n  dirigo bench scrape --rounds 5 --json scrape.json")]
    Scrape {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Seconds per run (1 to 600).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Rounds, each running both sides (the medians are reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        rounds: u64,
        /// Records per second the app is offered.
        #[arg(long, default_value_t = 20_000.0, value_parser = positive_rate)]
        rate: f64,
        /// Shards.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
        shards: u64,
    },
    /// What checkpoints cost: q5's throughput and a latency-critical app's p99 with
    /// checkpoints every second vs none (alternating rounds), then per state size the
    /// checkpoint's duration, the longest shard hold, and the time to restore.
    #[command(after_help = "Example:\n  dirigo bench checkpoint --json checkpoint.json")]
    Checkpoint {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Shards.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// NEXMark events per q5 round.
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        /// Rounds of each side.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Keys of the stateful app beside the latency-critical one.
        #[arg(long, default_value_t = 1_000_000)]
        keys: u64,
        /// Seconds of each latency round.
        #[arg(long, default_value_t = 4.0)]
        latency_seconds: f64,
        /// State sizes to checkpoint and restore, in MiB, comma separated.
        #[arg(long, default_value = "1,64,1024", value_delimiter = ',')]
        sizes_mib: Vec<u64>,
        /// Where the checkpoints go (a scratch folder inside, removed at the end).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The checkpoint thread's priority: `normal` (the default of `[checkpoint]`) or
        /// `idle` (only CPU the shards leave).
        #[arg(long, default_value = "normal", value_parser = ["idle", "normal"])]
        priority: String,
    },
    /// Publisher → NATS JetStream (a server of its own, started on a free port) →
    /// subscriber, three ways: the broker alone (`raw`), relayed through a second stream
    /// by a bare client (`relay`), and relayed by dirigo (NATS source → map → NATS sink):
    /// throughput, then latency at 25, 50 and 80 % of dirigo's, the paths in turns.
    #[command(after_help = "Example:\n  dirigo bench nats --rounds 3 --json nats.json")]
    Nats {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Records per throughput run.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Seconds of offered load per latency run.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Rounds; each figure is the median over them.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Shards of the dirigo path.
        #[arg(long, default_value_t = dirigo_bench::nats::SHARDS)]
        shards: usize,
        /// The paced publisher's tick in µs: 0 sends each record at its own time; a tick
        /// sends the records due within it together at its end (up to a tick late).
        #[arg(long, default_value_t = 0)]
        pace_tick_us: u64,
        /// The dirigo path's spin budget in µs (how long an idle shard polls before it
        /// parks, as `spin_budget_us` in a configuration); the runtime's default if absent.
        #[arg(long)]
        spin_budget_us: Option<u64>,
    },
    /// A NEXMark query (q0, q1, q2, q3, q4, q5, q7, q8, q11), or every one with `--all`,
    /// over events generated in memory beforehand: sustainable throughput, then open-loop
    /// latency at 50 % and 80 % of its lowest run, with the machine-noise probe beside the
    /// figures.
    /// With `--toml`, the query against a TOML pipeline instead, side by side.
    #[command(
        after_help = "Examples:\n  dirigo bench nexmark --query q5 --json q5.json\n  dirigo bench nexmark --all --json nexmark.json\n  dirigo bench nexmark --query q5 --toml configs/nexmark-q5.toml --rounds 5"
    )]
    Nexmark {
        /// The query.
        #[arg(long, default_value = "q5", conflicts_with = "all")]
        query: String,
        /// Every query, one after another, in one run (2 s per latency point unless
        /// `--latency-seconds` says otherwise).
        #[arg(long)]
        all: bool,
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Events per throughput run.
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Shards.
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// Throughput runs (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of offered load per latency run (default: 5, or 2 with `--all`).
        #[arg(long)]
        latency_seconds: Option<f64>,
        /// Instead: the query against this TOML pipeline of typed rows (its first app),
        /// side by side, alternating rounds: throughput of each and their ratio.
        #[arg(long, value_name = "FILE", conflicts_with = "all")]
        toml: Option<PathBuf>,
    },
    /// The same keyed 10 s tumbling-window count over NEXMark bids in dirigo and in
    /// timely-dataflow (2 workers each), in one run: throughput, and latency at the same
    /// offered load (50 % of the slower one's throughput).
    #[command(after_help = "Example:\n  dirigo bench peer --json peer.json")]
    Peer {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// NEXMark events generated (about 92 % are bids).
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        /// Alternating throughput runs of each (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Bids per throughput run, at least (the generated bids, cycled and shifted in
        /// event time).
        #[arg(long, default_value_t = 10_000_000)]
        throughput_bids: usize,
        /// Seconds of offered load per latency run.
        #[arg(long, default_value_t = 2.0)]
        latency_seconds: f64,
        /// Latency runs of each, alternating which goes first (histograms merged).
        #[arg(long, default_value_t = 2)]
        latency_rounds: usize,
        /// Offered load of the latency runs, bids per second (default: 50 % of the
        /// slower system's throughput).
        #[arg(long, value_name = "BIDS_PER_S", value_parser = positive_rate)]
        offered: Option<f64>,
        /// Let both systems' memory use transparent huge pages (the runtime turns them off
        /// by default: a huge-page fault stalls a shard while 2 MiB are zeroed).
        #[arg(long)]
        transparent_huge_pages: bool,
        /// Let the allocator give freed memory back to the operating system, for both
        /// systems (the command keeps it by default: purging it costs both a TLB shootdown
        /// and faults on reuse).
        #[arg(long)]
        release_freed_memory: bool,
        /// Put each firing's rows in key order on dirigo's side (by default they leave in
        /// the window's hash order, as on timely's side).
        #[arg(long)]
        sorted_windows: bool,
        /// dirigo's scheduling policy: round-robin, fifo, edf or dirigo (edf: window rows
        /// run before the bids that came after them).
        #[arg(long, default_value = "edf", value_parser = parse_peer_policy)]
        policy: dirigo_bench::peer::PeerPolicy,
        /// The latency target of dirigo's app, in microseconds (edf and dirigo policies).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
        slo_us: u64,
    },
    /// A load step from 30 % to 150 % of one shard's capacity on a mergeable operator
    /// under the `dirigo` policy: time to the first record on a lessee, and latency
    /// before, during and after the step.
    #[command(
        name = "scale-step",
        after_help = "Example:\n  dirigo bench scale-step --json scale-step.json"
    )]
    ScaleStep {
        /// Also write the results as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// CPU per record, in microseconds.
        #[arg(long, default_value_t = 20)]
        cost_us: u64,
        /// Seconds of low load before the step.
        #[arg(long, default_value_t = 1.0)]
        before_s: f64,
        /// Seconds of high load after the step.
        #[arg(long, default_value_t = 2.0)]
        after_s: f64,
        /// The app's SLO, in microseconds.
        #[arg(long, default_value_t = 1000)]
        slo_us: u64,
    },
}

fn main() -> ExitCode {
    allocator::keep_freed_memory();
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        None => {
            let name = "configs/default.toml (built in)";
            match config::Config::parse(std::path::Path::new(name), DEFAULT_CONFIG) {
                Ok(config) => {
                    let options = run::RunOptions {
                        config_name: name.to_owned(),
                        ..run::RunOptions::default()
                    };
                    return run_config(&config, options).into();
                }
                Err(error) => Err(error.to_string()),
            }
        }
        Some(Command::Run {
            config,
            duration,
            report,
            out,
            metrics,
            fail_on_slo,
            from_scratch,
            yes,
            allow_state_drop,
        }) => {
            let loaded = match config::Config::load(&config) {
                Ok(loaded) => loaded,
                Err(error) => {
                    eprintln!("{error}");
                    return Exit::Usage.into();
                }
            };
            if loaded.apps.is_empty() {
                eprintln!(
                    "{}: no [[app]] to run; add one (see configs/README.md), or use `dirigo demo --config` for runtime settings alone",
                    config.display()
                );
                return Exit::Usage.into();
            }
            let duration = match duration.as_deref().map(run::parse_duration).transpose() {
                Ok(duration) => duration,
                Err(error) => {
                    eprintln!("--duration: {error}");
                    return Exit::Usage.into();
                }
            };
            if from_scratch {
                if let Err((exit, message)) = clear_checkpoints(&loaded, yes) {
                    eprintln!("dirigo: {message}");
                    return exit.into();
                }
            }
            let metrics = match metrics
                .map(|address| config::socket_address(&toml::Spanned::new(0..0, address)))
            {
                None => None,
                Some(Ok(address)) => Some(address),
                Some(Err((_, message))) => {
                    eprintln!("--metrics: {message}");
                    return Exit::Usage.into();
                }
            };
            let options = run::RunOptions {
                config_name: config.display().to_string(),
                duration,
                report,
                out,
                metrics,
                fail_on_slo,
                allow_state_drop,
                restores: 0,
            };
            return run_config(&loaded, options).into();
        }
        Some(Command::Checkpoints { dir }) => list_checkpoints(&dir),
        Some(Command::Report { report, out }) => {
            run::render(&report, &out).map(|(report, paths)| {
                print!("{}", report::summary_table(&report));
                for path in paths {
                    println!("plot: {}", path.display());
                }
            })
        }
        Some(Command::Demo(args)) => {
            // A bad configuration is the user's input: exit code 2, like `validate`.
            if let Some(path) = &args.config {
                if let Err(error) = config::Config::load(path) {
                    eprintln!("{error}");
                    return Exit::Usage.into();
                }
            }
            demo::run(&args)
        }
        Some(Command::Validate { config }) => {
            return match config::Config::load(&config) {
                Ok(loaded) => {
                    println!("{}: valid ({})", config.display(), loaded.summary());
                    for note in rows::infer_note(&loaded) {
                        println!("{note}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{error}");
                    Exit::Usage.into()
                }
            };
        }
        Some(Command::Bench { scenario }) => match scenario {
            BenchScenario::Mesh {
                json,
                round_trips,
                parked_round_trips,
                messages,
            } => bench_mesh(json, round_trips, parked_round_trips, messages),
            BenchScenario::Consolidate {
                json,
                repetitions,
                max_bytes,
                lessor_keys_per_partial_key,
                new_key_percent,
            } => bench_consolidate(
                json,
                max_bytes,
                dirigo_bench::consolidate::ConsolidateConfig {
                    repetitions: repetitions.max(1),
                    lessor_keys_per_partial_key: lessor_keys_per_partial_key.max(1),
                    new_key_percent,
                    ..Default::default()
                },
            ),
            BenchScenario::Scrape {
                json,
                seconds,
                rounds,
                rate,
                shards,
            } => {
                if !(1.0..=600.0).contains(&seconds) {
                    eprintln!("--seconds: from 1 to 600, not {seconds}");
                    return Exit::Usage.into();
                }
                bench_scrape::run(&bench_scrape::ScrapeBenchConfig {
                    seconds,
                    rounds: rounds as usize,
                    rate,
                    shards: shards as usize,
                })
                .and_then(|report| emit(json, &report, report.table()))
            }
            BenchScenario::Lessee {
                json,
                records,
                rounds,
                work_ns,
            } => dirigo_bench::dual::lessee(&dirigo_bench::dual::LesseeBenchConfig {
                records: records.max(100),
                rounds: rounds.max(1),
                work_ns,
                ..Default::default()
            })
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Barrier {
                json,
                barriers,
                critical_every,
                work_ns,
                interval_ns,
            } => dirigo_bench::dual::barrier(&dirigo_bench::dual::BarrierBenchConfig {
                barriers: barriers.max(10),
                critical_every: critical_every.max(1),
                work_ns,
                interval_ns,
                ..Default::default()
            })
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Slo {
                json,
                seconds,
                rounds,
            } => dirigo_bench::slo::slo(&dirigo_bench::slo::SloBenchConfig {
                seconds: seconds.clamp(0.1, 3600.0),
                rounds: rounds.clamp(1, 100),
                ..Default::default()
            })
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Isolation {
                json,
                seconds,
                rounds,
                heavy_rate,
                critical_rate,
                critical_slo_us,
                heavy_share,
                burst_factor,
                keys,
                window_ms,
                slide_ms,
            } => dirigo_bench::isolation::run(&dirigo_bench::isolation::IsolationBenchConfig {
                seconds: if seconds.is_finite() {
                    seconds.clamp(1.5, 600.0)
                } else {
                    4.0
                },
                rounds: rounds.clamp(1, 100),
                heavy_rate,
                critical_rate,
                critical_slo: std::time::Duration::from_micros(critical_slo_us),
                heavy_share: if heavy_share.is_finite() {
                    heavy_share.clamp(0.01, 10.0)
                } else {
                    0.5
                },
                burst_factor: if burst_factor.is_finite() {
                    burst_factor.clamp(1.0, 100.0)
                } else {
                    3.0
                },
                keys,
                window_ms,
                slide_ms: slide_ms.clamp(window_ms.div_ceil(100), window_ms),
                ..Default::default()
            })
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Nats {
                json,
                events,
                seconds,
                rounds,
                shards,
                pace_tick_us,
                spin_budget_us,
            } => dirigo_bench::nats::run(&dirigo_bench::nats::NatsBenchConfig {
                events: events.clamp(1_000, 100_000_000),
                seconds: if seconds.is_finite() {
                    seconds.clamp(0.5, 600.0)
                } else {
                    3.0
                },
                rounds: rounds.clamp(1, 100),
                shards: shards.clamp(1, 64),
                pace_tick: Duration::from_micros(pace_tick_us.min(100_000)),
                spin_budget: spin_budget_us.map(|us| Duration::from_micros(us.min(1_000_000))),
            })
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Soak { json, seconds } => {
                dirigo_bench::soak::run(&dirigo_bench::soak::SoakConfig {
                    seconds: if seconds.is_finite() {
                        seconds.clamp(1.0, 3600.0)
                    } else {
                        60.0
                    },
                    ..Default::default()
                })
                .and_then(|report| emit(json, &report, report.table()))
            }
            BenchScenario::Checkpoint {
                json,
                shards,
                events,
                rounds,
                keys,
                latency_seconds,
                sizes_mib,
                dir,
                priority,
            } => dirigo_bench::checkpoint::run(&dirigo_bench::checkpoint::CheckpointBenchConfig {
                shards: shards.clamp(1, 1024),
                events: events.clamp(1_000, 1_000_000_000),
                rounds: rounds.clamp(1, 100),
                keys: keys.clamp(1, 100_000_000),
                latency_seconds: if latency_seconds.is_finite() {
                    latency_seconds.clamp(0.1, 3600.0)
                } else {
                    4.0
                },
                sizes: sizes_mib
                    .iter()
                    .map(|mib| mib.clamp(&1, &(64 << 10)) << 20)
                    .collect(),
                dir: dir.unwrap_or_else(std::env::temp_dir),
                priority: dirigo_runtime::background::ServicePriority::parse(&priority)
                    .unwrap_or_default(),
            })
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Nexmark {
                query,
                all: _,
                json,
                events,
                shards,
                rounds,
                latency_seconds: _,
                toml: Some(toml),
            } => bench_toml::run(
                &query,
                &toml,
                events.max(1000),
                shards.max(1),
                rounds.max(1),
            )
            .and_then(|report| emit(json, &report, report.table())),
            BenchScenario::Nexmark {
                query,
                all,
                json,
                events,
                shards,
                rounds,
                latency_seconds,
                toml: None,
            } => {
                let latency_seconds = latency_seconds
                    .filter(|seconds| seconds.is_finite())
                    .unwrap_or(if all { 2.0 } else { 5.0 });
                let config = dirigo_bench::nexmark::NexmarkBenchConfig {
                    query,
                    events: events.max(1000),
                    shards: shards.max(1),
                    rounds: rounds.max(1),
                    latency_seconds: latency_seconds.clamp(0.1, 3600.0),
                    ..Default::default()
                };
                if all {
                    dirigo_bench::nexmark::run_all(&config)
                        .and_then(|report| emit(json, &report, report.table()))
                } else {
                    dirigo_bench::nexmark::run(&config)
                        .and_then(|report| emit(json, &report, report.table()))
                }
            }
            BenchScenario::Peer {
                json,
                events,
                rounds,
                throughput_bids,
                latency_seconds,
                latency_rounds,
                offered,
                transparent_huge_pages,
                release_freed_memory,
                sorted_windows,
                policy,
                slo_us,
            } => {
                if release_freed_memory {
                    allocator::set_release_freed_memory(true);
                }
                dirigo_bench::peer::run(&dirigo_bench::peer::PeerBenchConfig {
                    events: events.max(1000),
                    rounds: rounds.max(1),
                    throughput_bids,
                    latency_seconds: latency_seconds.clamp(0.1, 600.0),
                    latency_rounds: latency_rounds.clamp(1, 100),
                    offered_per_s: offered,
                    transparent_huge_pages,
                    freed_memory_released: allocator::releases_freed_memory(),
                    sorted_windows,
                    policy,
                    slo: Duration::from_micros(slo_us),
                    ..Default::default()
                })
                .and_then(|report| emit(json, &report, report.table()))
            }
            BenchScenario::ScaleStep {
                json,
                cost_us,
                before_s,
                after_s,
                slo_us,
            } => seconds(before_s)
                .and_then(|before| Ok((before, seconds(after_s)?)))
                .and_then(|(before, after)| {
                    dirigo_bench::scale::scale_step(&dirigo_bench::scale::ScaleStepConfig {
                        cost_ns: cost_us.max(1) * 1000,
                        before,
                        after,
                        slo: Duration::from_micros(slo_us.max(1)),
                        ..Default::default()
                    })
                })
                .and_then(|report| emit(json, &report, report.table())),
        },
    };
    match result {
        Ok(()) => Exit::Success.into(),
        Err(message) => {
            eprintln!("dirigo: {message}");
            Exit::Failure.into()
        }
    }
}

fn bench_mesh(
    json: Option<PathBuf>,
    round_trips: usize,
    parked_round_trips: usize,
    messages: u64,
) -> Result<(), String> {
    let config = dirigo_bench::mesh::MeshBenchConfig {
        round_trips: round_trips.max(10),
        parked_round_trips: parked_round_trips.max(10),
        oneway_messages: messages.max(1000),
        ..Default::default()
    };
    let report = dirigo_bench::mesh::run(&config)?;
    print!("{}", report.table());
    if let Some(path) = json {
        write_json(&path, &report)?;
    }
    Ok(())
}

fn bench_consolidate(
    json: Option<PathBuf>,
    max_bytes: Option<usize>,
    mut config: dirigo_bench::consolidate::ConsolidateConfig,
) -> Result<(), String> {
    if let Some(max) = max_bytes {
        config.sizes.retain(|&bytes| bytes <= max);
        if config.sizes.is_empty() {
            return Err(format!(
                "--max-bytes {max} leaves no size to measure (the smallest is 1024)"
            ));
        }
    }
    let report = dirigo_bench::consolidate::run(&config)?;
    print!("{}", report.table());
    if let Some(path) = json {
        write_json(&path, &report)?;
    }
    Ok(())
}

/// The configuration `dirigo` runs without arguments.
const DEFAULT_CONFIG: &str = include_str!("../../configs/default.toml");

/// `--from-scratch`: deletes the configuration's checkpoints, after asking on a
/// terminal (unless `yes`). Without `[checkpoint]`, there is nothing to delete.
fn clear_checkpoints(config: &config::Config, yes: bool) -> Result<(), (Exit, String)> {
    let Some(section) = &config.checkpoint else {
        return Ok(());
    };
    let dir = section.settings(&config.base_dir).dir;
    let found = dirigo_operators::checkpoint::list(&dir)
        .map_err(|e| (Exit::Failure, format!("{}: {e}", dir.display())))?;
    if found.is_empty()
        && !dir
            .join(dirigo_operators::checkpoint::store::STAGED)
            .exists()
    {
        return Ok(());
    }
    if !yes {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err((
                Exit::Usage,
                format!(
                    "--from-scratch deletes {} checkpoint(s) in {}: add --yes to confirm",
                    found.len(),
                    dir.display()
                ),
            ));
        }
        eprint!(
            "delete {} checkpoint(s) in {} and start from scratch? [y/N] ",
            found.len(),
            dir.display()
        );
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err((Exit::Usage, "not confirmed: nothing deleted".into()));
        }
    }
    std::fs::remove_dir_all(&dir).map_err(|e| {
        (
            Exit::Failure,
            format!("cannot delete {}: {e}", dir.display()),
        )
    })
}

/// `dirigo checkpoints DIR`.
fn list_checkpoints(dir: &std::path::Path) -> Result<(), String> {
    let found =
        dirigo_operators::checkpoint::list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "{:>8}  {:<24}  {:>12}  {:<10}  apps",
        "id", "committed (UTC)", "bytes", "complete"
    );
    for info in &found {
        let time = info
            .created_unix_ms
            .map_or_else(|| "-".to_owned(), report::utc_time);
        let complete = match &info.complete {
            Ok(()) => "yes".to_owned(),
            Err(_) => "no".to_owned(),
        };
        let _ = writeln!(
            stdout,
            "{:>8}  {:<24}  {:>12}  {:<10}  {}",
            info.id,
            time,
            info.bytes,
            complete,
            info.apps.join(", ")
        );
        if let Err(why) = &info.complete {
            let _ = writeln!(stdout, "{:>8}  ({why})", "");
        }
    }
    if found.is_empty() {
        let _ = writeln!(stdout, "(no checkpoints in {})", dir.display());
    }
    Ok(())
}

/// Runs a loaded configuration and prints its summary; says how it ended: a report
/// path that cannot be written is a usage error (2), found before the run; a failed app
/// exits 4, lost output 3, a drain cut short 5, an SLO missed under `--fail-on-slo` 6, a
/// second signal 130.
fn run_config(config: &config::Config, options: run::RunOptions) -> Exit {
    match run_config_checked(config, options) {
        Ok(exit) => exit,
        Err((exit, message)) => {
            eprintln!("dirigo: {message}");
            exit
        }
    }
}

fn run_config_checked(
    config: &config::Config,
    options: run::RunOptions,
) -> Result<Exit, (Exit, String)> {
    if let Some(release) = config.runtime.release_freed_memory {
        allocator::set_release_freed_memory(release);
    }
    // Before the first line, so that a signal from here on stops the run cleanly.
    signals::install().map_err(|message| (Exit::Failure, message))?;
    eprintln!(
        "running {}: {} for {:.1} s",
        options.config_name,
        config.summary(),
        options
            .duration
            .unwrap_or_else(|| config.duration())
            .as_secs_f64()
    );
    let started = std::time::Instant::now();
    let mut options = options;
    let (report, path) = loop {
        let report_file = report::ReportFile::create(&run::report_path(config, &options))
            .map_err(|message| (Exit::Usage, message))?;
        let (report, path) = run::run_with(config, &options, report_file)
            .map_err(|error| (error.exit, error.message))?;
        // With checkpoints, a failed app restores every app from the last complete
        // checkpoint, in a new attempt that runs for what is left of the duration.
        let restore = config.checkpoint.is_some()
            && !report.failed_apps.is_empty()
            && options.restores < run::MAX_RESTORES
            && !signals::stop_requested();
        if !restore {
            break (report, path);
        }
        options.restores += 1;
        for app in report.apps.iter().filter(|app| app.failed.is_some()) {
            eprintln!(
                "dirigo: app {} failed ({}); restoring every app from the last complete \
                 checkpoint (restore {} of at most {})",
                app.name,
                app.failed.as_deref().unwrap_or_default(),
                options.restores,
                run::MAX_RESTORES
            );
        }
        let total = options.duration.unwrap_or_else(|| config.duration());
        options.duration = Some(
            total
                .saturating_sub(started.elapsed())
                .max(std::time::Duration::from_millis(1)),
        );
    };
    // Standard output may be closed (piped into `head`): the table is not worth a panic.
    let mut stdout = std::io::stdout().lock();
    let _ = write!(stdout, "{}", report::summary_table(&report));
    if path.is_file() {
        let _ = writeln!(stdout, "report: {}", path.display());
    }
    let _ = stdout.flush();
    if !report.failed_apps.is_empty() {
        eprintln!(
            "dirigo: failed app(s): {} (see `failed` in the report)",
            report.failed_apps.join(", ")
        );
    }
    for error in &report.output_errors {
        eprintln!("dirigo: output lost: {error}");
    }
    for (app, share) in exit::slo_misses(&report) {
        eprintln!(
            "dirigo: app {app} delivered {share:.2}% of its outputs within its SLO, below \
             the {}% --fail-on-slo asks for",
            report
                .meta
                .as_ref()
                .and_then(|meta| meta.fail_on_slo_percent)
                .unwrap_or_default()
        );
    }
    Ok(Exit::of_report(&report))
}

/// A share in percent: above 0 and at most 100.
fn percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if share > 0.0 && share <= 100.0 => Ok(share),
        _ => Err(format!(
            "a share in percent above 0 and at most 100, not {text:?}"
        )),
    }
}

/// A duration from a command-line number of seconds.
fn seconds(value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{value} is not a number of seconds"))
}

/// Prints a report's table and writes its JSON where asked.
fn emit(
    json: Option<PathBuf>,
    report: &impl serde::Serialize,
    table: String,
) -> Result<(), String> {
    print!("{table}");
    if let Some(path) = json {
        write_json(&path, report)?;
    }
    Ok(())
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|error| error.to_string())?;
    std::fs::write(path, text + "\n")
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// A load in events per second: a finite number above zero.
fn parse_peer_policy(text: &str) -> Result<dirigo_bench::peer::PeerPolicy, String> {
    text.parse()
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 1e10 => Ok(rate),
        Ok(_) => Err("expected a rate above 0 and at most 1e10 events per second".into()),
        Err(_) => Err(format!(
            "expected a number of events per second, found {text:?}"
        )),
    }
}
