//! The `dirigo` command.
//!
//! - `dirigo` (no arguments) or `dirigo demo`: a built-in demo that runs actors across
//!   shards and prints what each shard did;
//! - `dirigo bench mesh [--json PATH]`: the mesh benchmark (see `dirigo_bench::mesh`).

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "dirigo",
    version,
    about = "A thread-per-core stream-processing runtime for one machine, built for tail latency.",
    after_help = "Examples:\n  dirigo                              run the built-in demo\n  dirigo demo --shards 4 --events 2000000\n  dirigo bench mesh --json mesh.json  measure shard-to-shard hops against their floors"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in demo: keyed counters and a ring of relays spread over the shards.
    #[command(after_help = "Example:\n  dirigo demo --shards 2 --events 1000000")]
    Demo(demo::DemoArgs),
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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        None => demo::run(&demo::DemoArgs::default()),
        Some(Command::Demo(args)) => demo::run(&args),
        Some(Command::Bench { scenario }) => match scenario {
            BenchScenario::Mesh {
                json,
                round_trips,
                parked_round_trips,
                messages,
            } => bench_mesh(json, round_trips, parked_round_trips, messages),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("dirigo: {message}");
            ExitCode::FAILURE
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

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|error| error.to_string())?;
    std::fs::write(path, text + "\n")
        .map_err(|error| format!("cannot write {}: {error}", path.display()))
}
