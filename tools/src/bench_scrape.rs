//! `dirigo bench scrape`: what a Prometheus scrape costs the shards. A latency-critical
//! app (a steady generator, a map of about 1 µs per record, a 5 ms SLO, every record an
//! output) runs the same `dirigo run` twice per round, with the metrics endpoint on in
//! both: once with `/metrics` scraped every 100 ms (10 per second), once not scraped.
//! The order alternates from round to round. The scraper thread stands for a Prometheus
//! on another machine, so it runs at idle priority: its own work is not what is
//! measured, only what answering costs the shards. Reported: each run's p50 and p99, the
//! median p99 of each side and their ratio (scraped / quiet), the median of the rounds'
//! paired ratios, the p99 of each side's runs pooled together and its ratio, and what a
//! scrape took.
//!
//! On a virtual machine whose CPUs stop now and then for milliseconds, one run's p99
//! mostly says whether such a stall fell into it, so per-run p99s swing several-fold
//! between runs of the same side. The pooled p99 counts every output of a side's runs
//! at once (the runs' latency distributions averaged, all runs being the same length):
//! a stall then weighs by how many outputs it delayed, in whichever run it fell, and the
//! figure moves far less between repetitions of the benchmark.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Config;
use crate::report::ReportFile;
use crate::run::{self, RunOptions};

/// How often the scraped side is scraped.
pub const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Clone, Debug)]
pub struct ScrapeBenchConfig {
    /// Seconds per run.
    pub seconds: f64,
    /// Rounds (each runs both sides).
    pub rounds: usize,
    /// Records per second the app's source offers.
    pub rate: f64,
    /// Shards.
    pub shards: usize,
}

/// One run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct RunFigures {
    /// Whether `/metrics` was scraped.
    pub scraped: bool,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Outputs measured.
    pub outputs: u64,
    /// Scrapes answered.
    pub scrapes: u64,
    /// Median time a scrape took, ms (0 without scrapes).
    pub scrape_ms: f64,
    /// Bytes of the last scrape.
    pub scrape_bytes: usize,
    /// The run's latency distribution, `(quantile, ns)` (the report's CDF points).
    #[serde(skip)]
    pub cdf: Vec<(f64, u64)>,
}

/// The benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct ScrapeBenchReport {
    /// How to run it again.
    pub command: String,
    /// Every run, in the order they ran.
    pub runs: Vec<RunFigures>,
    /// Median p99 of the scraped runs, ms.
    pub p99_scraped_ms: f64,
    /// Median p99 of the runs not scraped, ms.
    pub p99_quiet_ms: f64,
    /// `p99_scraped_ms / p99_quiet_ms`: the target is at most 1.05.
    pub p99_ratio: f64,
    /// The median over rounds of each round's scraped p99 / quiet p99.
    pub p99_paired_ratio: f64,
    /// The p99 of every output of the scraped runs together, and of the quiet runs, ms.
    pub p99_pooled_ms: (f64, f64),
    /// `p99_pooled_ms.0 / p99_pooled_ms.1`.
    pub p99_pooled_ratio: f64,
    /// Median p50 of each side, ms: scraped, then quiet.
    pub p50_ms: (f64, f64),
    /// The machine-noise probe, run for a second before the rounds on the CPUs the
    /// shards may use: how often and how long the machine itself stopped them, so that a
    /// reader can tell a stall of the machine from one a scrape caused.
    pub machine_noise: Vec<dirigo_bench::noise::CpuNoise>,
}

impl ScrapeBenchReport {
    /// The table printed.
    pub fn table(&self) -> String {
        let mut text =
            String::from("round  side       p50 ms   p99 ms   outputs  scrapes  scrape ms\n");
        for (index, run) in self.runs.iter().enumerate() {
            text.push_str(&format!(
                "{:>5}  {:<8} {:>8.3} {:>8.3} {:>9} {:>8} {:>10.3}\n",
                index / 2 + 1,
                if run.scraped { "scraped" } else { "quiet" },
                run.p50_ms,
                run.p99_ms,
                crate::report::thousands(run.outputs),
                run.scrapes,
                run.scrape_ms
            ));
        }
        text.push_str(&format!(
            "median p99: scraped {:.3} ms, quiet {:.3} ms, ratio {:.3} (paired {:.3}); median p50 {:.3} / {:.3} ms\n",
            self.p99_scraped_ms,
            self.p99_quiet_ms,
            self.p99_ratio,
            self.p99_paired_ratio,
            self.p50_ms.0,
            self.p50_ms.1
        ));
        text.push_str(&format!(
            "pooled p99 (every output of a side's runs): scraped {:.3} ms, quiet {:.3} ms, ratio {:.3}\n",
            self.p99_pooled_ms.0, self.p99_pooled_ms.1, self.p99_pooled_ratio
        ));
        text.push_str(&dirigo_bench::noise::describe(&self.machine_noise));
        text
    }
}

/// The latency below which `quantile` of all outputs of `cdfs` together fall, each run
/// weighing the same: the smallest value of any run's CDF at which the runs' fractions
/// at or below it average at least `quantile`. A run's fraction at `value` is the
/// highest quantile of its CDF points at or below it (a step function, so the result
/// never understates).
fn pooled_quantile(cdfs: &[&[(f64, u64)]], quantile: f64) -> u64 {
    let mut values: Vec<u64> = cdfs
        .iter()
        .flat_map(|cdf| cdf.iter().map(|&(_, value)| value))
        .collect();
    values.sort_unstable();
    values.dedup();
    let fraction_at = |cdf: &[(f64, u64)], value: u64| {
        cdf.iter()
            .filter(|&&(_, at)| at <= value)
            .map(|&(q, _)| q)
            .fold(0.0, f64::max)
    };
    values
        .into_iter()
        .find(|&value| {
            let sum: f64 = cdfs.iter().map(|cdf| fraction_at(cdf, value)).sum();
            sum / cdfs.len().max(1) as f64 >= quantile
        })
        .unwrap_or(0)
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Runs the benchmark.
pub fn run(config: &ScrapeBenchConfig) -> Result<ScrapeBenchReport, String> {
    let dir = std::env::temp_dir().join(format!("dirigo-bench-scrape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let toml = format!(
        "[runtime]\nshards = {shards}\n\n[run]\nduration_s = {seconds}\n\n\
         [report]\ndir = {dir:?}\nhgrm = false\nplots = false\n\n\
         [[app]]\nname = \"critical\"\nslo_ms = 5\n\n[app.source]\nkind = \"generator\"\n\
         shape = {{ shape = \"constant\", rate = {rate} }}\nkeys = {{ dist = \"uniform\", keys = 1000 }}\nseed = 7\n\n\
         [[app.operator]]\nname = \"check\"\nkind = \"map\"\nwork_ns = 1000\n",
        shards = config.shards,
        seconds = config.seconds,
        dir = dir.display().to_string(),
        rate = config.rate,
    );
    let parsed = Config::parse(&dir.join("scrape.toml"), &toml).map_err(|e| e.to_string())?;
    // The shards are pinned to the first CPUs when there are enough, unpinned otherwise.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let shards = config.shards.max(1);
    let cpus: Vec<Option<usize>> = (0..shards)
        .map(|cpu| (shards <= cores).then_some(cpu))
        .collect();
    let machine_noise = dirigo_bench::noise::measure(&cpus, std::time::Duration::from_secs(1));
    let mut runs = Vec::new();
    for round in 0..config.rounds.max(1) {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for scraped in order {
            runs.push(one_run(&parsed, &dir, scraped)?);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let side = |scraped: bool, pick: fn(&RunFigures) -> f64| {
        median(
            runs.iter()
                .filter(|run| run.scraped == scraped)
                .map(pick)
                .collect(),
        )
    };
    let p99_scraped_ms = side(true, |run| run.p99_ms);
    let p99_quiet_ms = side(false, |run| run.p99_ms);
    let paired = runs
        .chunks(2)
        .map(|pair| {
            let scraped = pair
                .iter()
                .find(|run| run.scraped)
                .map_or(0.0, |r| r.p99_ms);
            let quiet = pair
                .iter()
                .find(|run| !run.scraped)
                .map_or(1.0, |r| r.p99_ms);
            scraped / quiet.max(1e-9)
        })
        .collect();
    let pooled = |scraped: bool| {
        let cdfs: Vec<&[(f64, u64)]> = runs
            .iter()
            .filter(|run| run.scraped == scraped)
            .map(|run| run.cdf.as_slice())
            .collect();
        pooled_quantile(&cdfs, 0.99) as f64 / 1e6
    };
    let p99_pooled_ms = (pooled(true), pooled(false));
    Ok(ScrapeBenchReport {
        p99_pooled_ms,
        p99_pooled_ratio: p99_pooled_ms.0 / p99_pooled_ms.1.max(1e-9),
        command: format!(
            "dirigo bench scrape --seconds {} --rounds {} --rate {} --shards {}",
            config.seconds, config.rounds, config.rate, config.shards
        ),
        p99_ratio: p99_scraped_ms / p99_quiet_ms.max(1e-9),
        p99_paired_ratio: median(paired),
        p50_ms: (side(true, |run| run.p50_ms), side(false, |run| run.p50_ms)),
        p99_scraped_ms,
        p99_quiet_ms,
        runs,
        machine_noise,
    })
}

/// A free loopback port (bound, then let go: the run binds it again at once).
fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("no free port: {e}"))
}

fn one_run(config: &Config, dir: &std::path::Path, scraped: bool) -> Result<RunFigures, String> {
    let address = free_port()?;
    let options = RunOptions {
        config_name: "bench scrape".into(),
        metrics: Some(address),
        ..RunOptions::default()
    };
    let report_file = ReportFile::create(&dir.join("report.json"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = scraped.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let _ = dirigo_runtime::background::yield_to_shards();
            scrape_until(address, &stop)
        })
    });
    let result = run::run_with(config, &options, report_file);
    stop.store(true, Ordering::Relaxed);
    let (times, bytes) = scraper
        .map(|thread| thread.join().unwrap_or_default())
        .unwrap_or_default();
    let (report, _) = result.map_err(|error| error.message)?;
    let app = report.apps.first().ok_or("the run reported no app")?;
    Ok(RunFigures {
        scraped,
        p50_ms: app.latency_ns.p50 as f64 / 1e6,
        p99_ms: app.latency_ns.p99 as f64 / 1e6,
        outputs: app.outputs,
        scrapes: times.len() as u64,
        scrape_ms: median(times),
        scrape_bytes: bytes,
        cdf: app.cdf.clone(),
    })
}

/// Scrapes `/metrics` every [`SCRAPE_EVERY`] until `stop`; returns each scrape's time
/// (ms) and the last page's size.
fn scrape_until(address: SocketAddr, stop: &AtomicBool) -> (Vec<f64>, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        if let Ok(page) = scrape(address) {
            times.push(started.elapsed().as_secs_f64() * 1e3);
            bytes = page.len();
        }
        next += SCRAPE_EVERY;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    (times, bytes)
}

fn scrape(address: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: dirigo\r\n\r\n")?;
    let mut page = Vec::new();
    stream.read_to_end(&mut page)?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::pooled_quantile;

    #[test]
    fn the_pooled_quantile_weighs_every_run_alike() {
        let fast: &[(f64, u64)] = &[(0.5, 10), (0.99, 20), (1.0, 30)];
        let slow: &[(f64, u64)] = &[(0.5, 100), (0.99, 200), (1.0, 300)];
        // One run alone: its own quantiles.
        assert_eq!(pooled_quantile(&[fast], 0.99), 20);
        assert_eq!(pooled_quantile(&[slow], 0.5), 100);
        // Half the outputs are the fast run's, all of them at or below 30.
        assert_eq!(pooled_quantile(&[fast, slow], 0.5), 30);
        // 99 % of both: all the fast run's and 98 % of the slow run's at least.
        assert_eq!(pooled_quantile(&[fast, slow], 0.99), 200);
        assert_eq!(pooled_quantile(&[slow, fast], 0.99), 200);
        assert_eq!(pooled_quantile(&[], 0.99), 0);
    }
}
