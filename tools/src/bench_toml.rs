//! `dirigo bench nexmark --query Q --toml FILE`: a built-in NEXMark query and the same
//! query written as a TOML pipeline of typed rows, side by side in one run. Both read
//! the same events, generated in memory beforehand; the TOML app turns each event into
//! its row in its source (that cost is the TOML pipeline's) and its leaves end in a
//! latency recorder, as the built-in query does, instead of the file's sink. Rounds
//! alternate which one runs first (built-in first in even rounds), each on a fresh
//! runtime; the throughput of each is the median of its rounds, and the ratio is
//! reported both of the medians and as the median of each round's ratio.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dirigo_bench::nexmark::{run_app, run_to_end};
use dirigo_bench::noise::{self, CpuNoise};
use dirigo_operators::dataflow::Time;
use dirigo_operators::io::DeadLetterSink;
use dirigo_operators::nexmark::events::{Event, NexmarkSpec};
use dirigo_operators::nexmark::queries::Query;
use dirigo_operators::source::Pacing;
use serde::Serialize;

use crate::config::Config;

/// The result.
#[derive(Debug, Serialize)]
pub struct TomlBenchReport {
    /// The built-in query.
    pub query: String,
    /// The TOML file.
    pub toml: String,
    /// Shards.
    pub shards: usize,
    /// Events per run.
    pub events: u64,
    /// Built-in query, events per second, per round.
    pub builtin_per_s: Vec<f64>,
    /// TOML pipeline, events per second, per round.
    pub toml_per_s: Vec<f64>,
    /// Median of `builtin_per_s`.
    pub builtin_median_per_s: f64,
    /// Median of `toml_per_s`.
    pub toml_median_per_s: f64,
    /// `toml_median_per_s / builtin_median_per_s`.
    pub ratio_of_medians: f64,
    /// The median of each round's TOML / built-in ratio.
    pub median_round_ratio: f64,
    /// Outputs of one run of each: built-in, TOML.
    pub outputs: (u64, u64),
    /// The machine-noise probe taken before the rounds.
    pub machine_noise: Vec<CpuNoise>,
}

impl TomlBenchReport {
    /// A table for people.
    pub fn table(&self) -> String {
        let rates = |rates: &[f64]| {
            rates
                .iter()
                .map(|rate| format!("{rate:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "nexmark {} built in vs {} on {} shards, {} events per run, alternating rounds\n\
             built-in: {:>10.0} events/s median  [{}]\n\
             toml:     {:>10.0} events/s median  [{}]\n\
             ratio toml / built-in: {:.3} (of the medians), {:.3} (median of the rounds' ratios)\n\
             outputs per run: built-in {}, toml {}\n{}",
            self.query,
            self.toml,
            self.shards,
            self.events,
            self.builtin_median_per_s,
            rates(&self.builtin_per_s),
            self.toml_median_per_s,
            rates(&self.toml_per_s),
            self.ratio_of_medians,
            self.median_round_ratio,
            self.outputs.0,
            self.outputs.1,
            noise::describe(&self.machine_noise),
        )
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Runs `query` and the first app of `toml` over `events` events on `shards` shards,
/// `rounds` times each, alternating.
pub fn run(
    query: &str,
    toml: &Path,
    events: usize,
    shards: usize,
    rounds: usize,
) -> Result<TomlBenchReport, String> {
    let config = Config::load(toml).map_err(|error| error.to_string())?;
    let section = config
        .apps
        .first()
        .ok_or_else(|| format!("{}: no [[app]] to run", toml.display()))?;
    let generated: Arc<Vec<(Time, Event)>> = Arc::new(
        NexmarkSpec {
            events,
            ..NexmarkSpec::default()
        }
        .iter()
        .map(|event| (event.time(), event))
        .collect(),
    );
    // Checked once before any round: the query exists and the file builds.
    let letters_dir =
        std::env::temp_dir().join(format!("dirigo-bench-toml-{}", std::process::id()));
    std::fs::create_dir_all(&letters_dir)
        .map_err(|e| format!("cannot create {}: {e}", letters_dir.display()))?;
    let letters = DeadLetterSink::to_file(letters_dir.join("dead-letters.jsonl"));
    crate::rows::build_over_events(
        section,
        &config.base_dir,
        generated.clone(),
        letters.clone(),
    )?;
    let builtin_round = || -> Result<(f64, u64), String> {
        let mut known = true;
        let (elapsed, recorder) =
            run_app(
                shards,
                generated.clone(),
                Pacing::Unpaced,
                |source| match Query::build(query, source) {
                    Some(built) => built.record_latency("out"),
                    None => {
                        known = false;
                        dirigo_operators::sink::LatencyRecorder::new()
                    }
                },
            )?;
        if !known {
            return Err(format!("unknown query {query:?}"));
        }
        Ok((
            generated.len() as f64 / elapsed.as_secs_f64(),
            recorder.outputs(),
        ))
    };
    let toml_round = || -> Result<(f64, u64), String> {
        let (app, recorder) = crate::rows::build_over_events(
            section,
            &config.base_dir,
            generated.clone(),
            letters.clone(),
        )?;
        let elapsed = run_to_end(&app, shards)?;
        Ok((
            generated.len() as f64 / elapsed.as_secs_f64(),
            recorder.outputs(),
        ))
    };
    let cpus: Vec<Option<usize>> = (0..shards).map(Some).collect();
    let machine_noise = noise::measure(&cpus, Duration::from_millis(500));
    let (mut builtin, mut typed, mut outputs) = (Vec::new(), Vec::new(), (0, 0));
    for round in 0..rounds.max(1) {
        let (b, t) = if round % 2 == 0 {
            let b = builtin_round()?;
            (b, toml_round()?)
        } else {
            let t = toml_round()?;
            (builtin_round()?, t)
        };
        builtin.push(b.0);
        typed.push(t.0);
        outputs = (b.1, t.1);
    }
    let _ = std::fs::remove_dir_all(&letters_dir);
    let ratios: Vec<f64> = typed.iter().zip(&builtin).map(|(t, b)| t / b).collect();
    let (builtin_median, toml_median) = (median(&builtin), median(&typed));
    Ok(TomlBenchReport {
        query: query.to_owned(),
        toml: toml.display().to_string(),
        shards,
        events: generated.len() as u64,
        builtin_per_s: builtin,
        toml_per_s: typed,
        builtin_median_per_s: builtin_median,
        toml_median_per_s: toml_median,
        ratio_of_medians: toml_median / builtin_median.max(1e-9),
        median_round_ratio: median(&ratios),
        outputs,
        machine_noise,
    })
}
