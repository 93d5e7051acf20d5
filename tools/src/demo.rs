//! The built-in demo: a keyed word count spread over the shards.
//!
//! An outside thread (the ingress) generates `events` words drawn from `keys` distinct
//! words with a skewed (Zipf-like) popularity and sends each to the counter partition its
//! word hashes to. Counters are virtual actors spread over the shards by their stable
//! hash. At the end every counter sends its totals to one aggregator actor, which hands
//! the merged table back. The demo checks that every event was counted exactly once and
//! prints the top words and what each shard did.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Args;
use dirigo_operators::{Partitioner, Partitioning};
use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime};

/// Options of `dirigo demo`.
#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// Shards to run (default: one per available CPU; at most 4 per CPU, and 256).
    #[arg(long, value_parser = shards_in_bounds)]
    pub shards: Option<usize>,
    /// Events to generate.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Distinct words.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u32,
    /// Partitions of the counter operator (1 to 128).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::config::MAX_PARTITIONS)))]
    pub partitions: u32,
    /// Runtime and scheduler settings from a TOML file (`--shards` overrides its
    /// shard count).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
}

/// `--shards`: the bounds a configuration's `shards` has (`config::max_shards`).
fn shards_in_bounds(text: &str) -> Result<usize, String> {
    let shards: usize = text
        .parse()
        .map_err(|_| format!("a number of shards, not `{text}`"))?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let most = crate::config::max_shards(cpus);
    if shards == 0 || shards > most {
        return Err(format!(
            "1 to {most} shards ({} per CPU, {cpus} CPUs here, never more than {}), not {shards}",
            crate::config::MAX_SHARDS_PER_CPU,
            crate::config::MAX_SHARDS
        ));
    }
    Ok(shards)
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            shards: None,
            events: 2_000_000,
            keys: 1_000,
            partitions: 16,
            config: None,
        }
    }
}

const APP: u16 = 0;
const COUNTER: u16 = 0;
const AGGREGATOR: u16 = 1;

enum DemoMsg {
    /// One occurrence of a word.
    Word(u32),
    /// Send your totals to the aggregator.
    Flush { partitions: u32 },
    /// One counter's totals.
    Totals {
        counts: Vec<(u32, u64)>,
        partitions: u32,
    },
}

struct Counter {
    counts: HashMap<u32, u64>,
}

impl Actor<DemoMsg> for Counter {
    fn receive(&mut self, ctx: &mut Context<'_, DemoMsg>, message: Envelope<DemoMsg>) {
        match message.payload {
            DemoMsg::Word(word) => *self.counts.entry(word).or_default() += 1,
            DemoMsg::Flush { partitions } => {
                let counts = self.counts.drain().collect();
                ctx.send(
                    ActorId::new(APP, AGGREGATOR, 0),
                    DemoMsg::Totals { counts, partitions },
                )
                .expect("the aggregator is registered");
            }
            DemoMsg::Totals { .. } => {}
        }
    }
}

struct Aggregator {
    merged: HashMap<u32, u64>,
    reported: u32,
    done: flume::Sender<HashMap<u32, u64>>,
}

impl Actor<DemoMsg> for Aggregator {
    fn receive(&mut self, _ctx: &mut Context<'_, DemoMsg>, message: Envelope<DemoMsg>) {
        if let DemoMsg::Totals { counts, partitions } = message.payload {
            for (word, count) in counts {
                *self.merged.entry(word).or_default() += count;
            }
            self.reported += 1;
            if self.reported == partitions {
                let _ = self.done.send(std::mem::take(&mut self.merged));
            }
        }
    }
}

/// A deterministic skewed word stream: word `k` has weight ~ 1/(k+1).
struct Words {
    state: u64,
    cumulative: Vec<f64>,
}

impl Words {
    fn new(keys: u32, seed: u64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..keys.max(1))
            .map(|k| {
                total += 1.0 / f64::from(k + 1);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.iter().map(|c| c / total).collect();
        Self {
            state: seed,
            cumulative,
        }
    }

    fn next_word(&mut self) -> u32 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let draw =
            (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        self.cumulative.partition_point(|&c| c < draw) as u32
    }
}

/// Runs the demo and prints its summary.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    let (done_tx, done_rx) = flume::bounded(1);
    let mut builder = Runtime::<DemoMsg>::builder();
    if let Some(path) = &args.config {
        let config = crate::config::Config::load(path).map_err(|error| error.to_string())?;
        builder = config.apply(builder);
    }
    if let Some(shards) = args.shards {
        builder = builder.shards(shards);
    }
    let runtime = builder
        .operator(APP, COUNTER, |_, _| {
            Box::new(Counter {
                counts: HashMap::new(),
            }) as Box<dyn Actor<DemoMsg>>
        })
        .operator(APP, AGGREGATOR, move |_, _| {
            Box::new(Aggregator {
                merged: HashMap::new(),
                reported: 0,
                done: done_tx.clone(),
            }) as Box<dyn Actor<DemoMsg>>
        })
        .build()
        .map_err(|error| error.to_string())?;
    let placement = runtime.placement();
    println!(
        "dirigo demo: {} events over {} words into {} counter partitions on {} shards ({})",
        args.events,
        args.keys,
        args.partitions,
        runtime.shards(),
        if placement.pinned() {
            format!(
                "pinned to CPUs {:?}",
                placement.cpus.iter().flatten().collect::<Vec<_>>()
            )
        } else {
            "unpinned".to_string()
        }
    );

    let ingress = runtime.ingress();
    let mut edge = Partitioner::new(Partitioning::KeyHash, args.partitions);
    let mut words = Words::new(args.keys, 0x00d1_2160);
    let started = Instant::now();
    for _ in 0..args.events {
        let word = words.next_word();
        for partition in edge.targets(0, &word) {
            ingress
                .send_to(ActorId::new(APP, COUNTER, partition), DemoMsg::Word(word))
                .map_err(|error| error.to_string())?;
        }
    }
    for partition in 0..args.partitions {
        ingress
            .send_to(
                ActorId::new(APP, COUNTER, partition),
                DemoMsg::Flush {
                    partitions: args.partitions,
                },
            )
            .map_err(|error| error.to_string())?;
    }
    let merged = done_rx
        .recv_timeout(Duration::from_secs(600))
        .map_err(|_| "the aggregator did not report".to_string())?;
    let elapsed = started.elapsed();
    let report = runtime.shutdown();

    let counted: u64 = merged.values().sum();
    println!(
        "counted {counted} events in {:.2} s ({:.0} events/s); {} distinct words",
        elapsed.as_secs_f64(),
        counted as f64 / elapsed.as_secs_f64(),
        merged.len()
    );
    let mut top: Vec<(u32, u64)> = merged.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = top
        .iter()
        .take(5)
        .map(|(word, count)| format!("word{word}={count}"))
        .collect();
    println!("top words: {}", top.join(", "));
    println!();
    println!(
        "{:>5} {:>5} {:>10} {:>10} {:>10} {:>9} {:>7} {:>7} {:>9} {:>8}",
        "shard", "cpu", "in", "out", "handled", "busy ms", "parks", "wakes", "ring full", "actors"
    );
    for shard in &report.shards {
        println!(
            "{:>5} {:>5} {:>10} {:>10} {:>10} {:>9.1} {:>7} {:>7} {:>9} {:>8}",
            shard.shard,
            shard.cpu.map_or_else(|| "-".into(), |cpu| cpu.to_string()),
            shard.msgs_in,
            shard.msgs_out,
            shard.handled,
            shard.busy_ns as f64 / 1e6,
            shard.parks,
            shard.wakes,
            shard.ring_full,
            shard.activations
        );
    }
    if counted != args.events {
        return Err(format!(
            "counted {counted} events but sent {}: events were lost or duplicated",
            args.events
        ));
    }
    println!("\nok: every event counted exactly once");
    Ok(())
}
