//! The runtime: its builder (which starts the shards), the running [`Runtime`] and its
//! shutdown. [`Ingress`], the intake for threads outside it, is in `ingress`; what the
//! shards share lives in `shared`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::actor::{ActorFactory, Factories};
use crate::dual::{ActorMetrics, StateKind};
use crate::envelope::{ActorId, AppId, Envelope, OperatorId, ShardId};
use crate::failure::{AppFailure, Failures, PanicHook};
use crate::mesh::{build_links, Doorbell};
use crate::placement::{self, CpuSpec, Placement};
use crate::preflight::{self, PreflightError, PreflightReport};
use crate::scheduling::{
    AppUsage, CostTable, OperatorCosts, RoundRobin, SchedulingPolicy, UsageTable,
};
use crate::shard::{Shard, ShardStart};
use crate::shared::{Intake, OperatorTable, ShardConfig, ShardRouter, Shared, ShedHook};
use crate::stats::ShardStats;

pub use crate::ingress::Ingress;

/// Reads every shard's live counters ([`Runtime::stats_reader`]). Each counter has one
/// writer, its shard, and is read with a plain load: reading takes no lock and makes the
/// shards do nothing.
pub struct StatsReader<M> {
    shared: Arc<Shared<M>>,
}

impl<M> Clone for StatsReader<M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<M> StatsReader<M> {
    /// A snapshot of every shard's counters, as [`Runtime::stats`].
    pub fn stats(&self) -> Vec<ShardStats> {
        self.shared
            .counters
            .iter()
            .enumerate()
            .map(|(shard, counters)| counters.snapshot(shard, self.shared.cpus[shard]))
            .collect()
    }

    /// Each operator's measured cost, as [`Runtime::operator_costs`].
    pub fn operator_costs(&self) -> Vec<OperatorCosts> {
        self.shared.costs.snapshot()
    }

    /// What each app used so far, as [`Runtime::app_usage`].
    pub fn app_usage(&self) -> Vec<AppUsage> {
        self.shared.usage.snapshot(crate::clock::now())
    }
}

/// Why a runtime could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The shard or CPU request itself is wrong.
    Placement(String),
    /// The machine cannot run shards (see the message for what to do).
    Preflight(PreflightError),
    /// A shard's glommio executor could not start.
    Executor {
        /// The shard.
        shard: ShardId,
        /// glommio's error.
        error: String,
    },
    /// A hook registered with [`RuntimeBuilder::on_started`] refused the started runtime
    /// (which was shut down again), for this reason.
    Started(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Placement(message) => write!(f, "bad shard placement: {message}"),
            Self::Preflight(error) => write!(f, "{error}"),
            Self::Executor { shard, error } => {
                write!(f, "shard {shard} could not start its executor: {error}")
            }
            Self::Started(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for BuildError {}

/// Configures and starts a [`Runtime`].
///
/// Defaults:
///
/// | setting | default | meaning |
/// | --- | --- | --- |
/// | shards | one per available CPU | `shards(n)` or `cpus([..])` |
/// | ring capacity | 1024 | messages per shard-to-shard ring (rounded up to a power of two) |
/// | spin budget | 100 µs | how long an idle shard polls before it parks |
/// | park timeout | 10 ms | longest park, so glommio's timers and I/O still get turns |
/// | idle deactivation | 60 s | an actor idle this long is deactivated, its state kept |
/// | intake capacity | 4096 | messages from outside threads waiting per shard |
/// | I/O memory | 1 MiB | memory each shard's glommio executor registers with io_uring |
/// | transparent huge pages | off | for the whole process; see [`huge_pages`](crate::huge_pages) |
///
/// ```
/// use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime};
///
/// struct Echo;
/// impl Actor<u64> for Echo {
///     fn receive(&mut self, _ctx: &mut Context<'_, u64>, _message: Envelope<u64>) {}
/// }
///
/// let runtime = Runtime::<u64>::builder()
///     .shards(2)
///     .operator(0, 0, |_id, _saved| Box::new(Echo) as Box<dyn Actor<u64>>)
///     .build()
///     .unwrap();
/// runtime.ingress().send_to(ActorId::new(0, 0, 7), 42).unwrap();
/// let report = runtime.shutdown();
/// assert_eq!(report.handled(), 1);
/// ```
pub struct RuntimeBuilder<M: Send + 'static> {
    cpus: Option<CpuSpec>,
    pin: bool,
    ring_capacity: usize,
    mailbox_high_water: Option<usize>,
    spin_budget: Duration,
    turn_budget: Option<Duration>,
    park_timeout: Duration,
    idle_deactivation: Option<Duration>,
    intake_capacity: usize,
    io_memory: usize,
    transparent_huge_pages: bool,
    factories: Factories<M>,
    operators: OperatorTable,
    policy: Arc<dyn SchedulingPolicy>,
    slos: BTreeMap<AppId, Duration>,
    handler_warning: Duration,
    shed_hooks: Vec<ShedHook<M>>,
    panic_hooks: Vec<PanicHook>,
    discard_hooks: Vec<ShedHook<M>>,
    started_hooks: Vec<StartedHook<M>>,
}

/// What runs on a runtime once its shards run, before [`RuntimeBuilder::build`] returns
/// it (see [`RuntimeBuilder::on_started`]).
type StartedHook<M> = Box<dyn FnOnce(&Runtime<M>) -> Result<(), String> + Send>;

impl<M: Send + 'static> Default for RuntimeBuilder<M> {
    fn default() -> Self {
        Self {
            cpus: None,
            pin: true,
            ring_capacity: 1024,
            mailbox_high_water: None,
            spin_budget: Duration::from_micros(100),
            turn_budget: None,
            park_timeout: Duration::from_millis(10),
            idle_deactivation: Some(Duration::from_secs(60)),
            intake_capacity: 4096,
            io_memory: 1 << 20,
            transparent_huge_pages: false,
            factories: Factories::default(),
            operators: OperatorTable::default(),
            policy: Arc::new(RoundRobin),
            slos: BTreeMap::new(),
            handler_warning: Duration::from_millis(10),
            shed_hooks: Vec::new(),
            panic_hooks: Vec::new(),
            discard_hooks: Vec::new(),
            started_hooks: Vec::new(),
        }
    }
}

impl<M: Send + 'static> RuntimeBuilder<M> {
    /// Runs `shards` shards, pinned to the first available CPUs; unpinned (with a warning)
    /// when there are fewer CPUs than shards.
    pub fn shards(mut self, shards: usize) -> Self {
        self.cpus = Some(CpuSpec::Shards(shards));
        self
    }

    /// Runs one shard per listed CPU; unpinned (with a warning) if any is not available.
    pub fn cpus(mut self, cpus: impl Into<Vec<usize>>) -> Self {
        self.cpus = Some(CpuSpec::Cpus(cpus.into()));
        self
    }

    /// Whether shards are pinned to their CPUs (default `true`). Unpinned shards let the
    /// OS move them: for machines shared with other busy processes, where a pinned shard
    /// would wait for its one CPU.
    pub fn pinned(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Capacity of each shard-to-shard ring, in messages.
    pub fn ring_capacity(mut self, capacity: usize) -> Self {
        self.ring_capacity = capacity;
        self
    }

    /// How many messages a shard's mailboxes may hold before it stops draining its
    /// inbound rings and its intake (default: four times the ring capacity). Past this
    /// mark the rings towards the shard fill, messages wait in the senders' outboxes,
    /// and sources there see [`Context::backpressured`](crate::Context::backpressured):
    /// an overloaded shard slows its producers down instead of buffering without bound.
    /// A shard above the mark still runs its mailboxes, and a lessor waiting for partial
    /// states keeps draining, so this never deadlocks.
    pub fn mailbox_high_water(mut self, messages: usize) -> Self {
        self.mailbox_high_water = Some(messages.max(1));
        self
    }

    /// How long an idle shard keeps polling before it parks, at most; zero parks at once.
    /// Each shard polls less while its parks show that polling would not have paid
    /// (work came later than this), and comes back to this when work comes sooner.
    pub fn spin_budget(mut self, budget: Duration) -> Self {
        self.spin_budget = budget;
        self
    }

    /// How much handler time a shard runs before it looks at its timers and inbound
    /// rings again, and what the dataflow layer cuts batches and window firings to (see
    /// [`turn`](crate::turn)); within 1 µs..=10 ms. By default 50 µs; where several apps
    /// share the runtime, the tightest [`app_slo`](Self::app_slo) ÷ 64 where that is
    /// less, never below 10 µs. Shorter turns let a latency-critical message wait less
    /// behind other apps' work, and cost those apps throughput.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dirigo_runtime::Runtime;
    ///
    /// let runtime = Runtime::<u64>::builder()
    ///     .shards(1)
    ///     .turn_budget(Duration::from_micros(20))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(runtime.turn_budget(), Duration::from_micros(20));
    /// runtime.shutdown();
    /// ```
    pub fn turn_budget(mut self, budget: Duration) -> Self {
        self.turn_budget = Some(crate::turn::bounded(budget));
        self
    }

    /// The longest a parked shard sleeps before it looks around by itself.
    pub fn park_timeout(mut self, timeout: Duration) -> Self {
        self.park_timeout = timeout.max(Duration::from_micros(1));
        self
    }

    /// Deactivate actors idle for this long (`None`: never).
    pub fn idle_deactivation(mut self, after: Option<Duration>) -> Self {
        self.idle_deactivation = after;
        self
    }

    /// How many messages from outside threads may wait per shard before senders block.
    pub fn intake_capacity(mut self, capacity: usize) -> Self {
        self.intake_capacity = capacity.max(1);
        self
    }

    /// Memory each shard's executor registers with io_uring for storage I/O.
    pub fn io_memory(mut self, bytes: usize) -> Self {
        self.io_memory = bytes;
        self
    }

    /// Whether the process's memory may be backed by transparent huge pages (default:
    /// no). Faulting in a huge page zeroes 2 MiB on the faulting shard, a stall of
    /// milliseconds on a virtual machine, whenever a heap grows; see
    /// [`huge_pages`](crate::huge_pages). The setting is the whole process's, and the
    /// runtime built last decides it.
    ///
    /// ```
    /// use dirigo_runtime::{huge_pages, Runtime};
    ///
    /// let runtime = Runtime::<u64>::builder().shards(1).build().unwrap();
    /// assert_eq!(huge_pages::allowed().unwrap(), Some(false));
    /// runtime.shutdown();
    /// let runtime = Runtime::<u64>::builder()
    ///     .shards(1)
    ///     .transparent_huge_pages(true)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(huge_pages::allowed().unwrap(), Some(true));
    /// runtime.shutdown();
    /// ```
    pub fn transparent_huge_pages(mut self, allowed: bool) -> Self {
        self.transparent_huge_pages = allowed;
        self
    }

    /// The scheduling policy every shard orders its ready work by (default:
    /// [`RoundRobin`](crate::scheduling::RoundRobin)).
    pub fn policy(mut self, policy: impl SchedulingPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// A handler that holds its shard longer than this is logged (at most once a second
    /// per shard) and counted (`ShardStats::slow_handlers`): handlers cannot be
    /// preempted, so everything queued behind one waits. Checked while handlers are timed
    /// (some app has an SLO, or the policy wants costs). Default 10 ms.
    pub fn handler_warning(mut self, bound: Duration) -> Self {
        self.handler_warning = bound;
        self
    }

    /// Calls `hook` with every message the scheduling policy sheds, just before it is
    /// dropped (on the shard that sheds it; keep it short). Hooks add up: each one
    /// registered is called. Shed messages are counted per shard whether or not a hook
    /// looks at them; a hook lets a layer above count what they carried.
    pub fn on_shed(mut self, hook: impl Fn(&Envelope<M>) + Send + Sync + 'static) -> Self {
        self.shed_hooks.push(Arc::new(hook));
        self
    }

    /// Calls `hook` with every handler panic: the actor whose handler panicked and the
    /// panic's message, just after its app was marked failed (on the shard where it
    /// panicked; keep it short). A handler panic fails its app (see
    /// [`failure`](crate::failure)); a hook lets a layer above stop waiting for the app.
    /// Hooks add up.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime};
    ///
    /// struct Picky;
    /// impl Actor<u32> for Picky {
    ///     fn receive(&mut self, _ctx: &mut Context<'_, u32>, message: Envelope<u32>) {
    ///         assert!(message.payload != 13, "unlucky {}", message.payload);
    ///     }
    /// }
    ///
    /// let (failed, failures) = flume::unbounded();
    /// let runtime = Runtime::<u32>::builder()
    ///     .shards(1)
    ///     .operator(0, 0, |_, _| Box::new(Picky) as Box<dyn Actor<u32>>)
    ///     .on_handler_panic(move |actor, message| {
    ///         let _ = failed.send((actor, message.to_owned()));
    ///     })
    ///     .build()
    ///     .unwrap();
    /// let ingress = runtime.ingress();
    /// for value in [1, 13, 2] {
    ///     ingress.send_to(ActorId::new(0, 0, 0), value).unwrap();
    /// }
    /// let (actor, message) = failures.recv_timeout(Duration::from_secs(10)).unwrap();
    /// assert_eq!(actor, ActorId::new(0, 0, 0));
    /// assert_eq!(message, "unlucky 13");
    /// assert_eq!(runtime.app_failure(0).unwrap().message, "unlucky 13");
    /// let report = runtime.shutdown();
    /// // The message after the panic was discarded, not handled by a re-created actor.
    /// assert_eq!(report.shards[0].handler_panics, 1);
    /// assert_eq!(report.shards[0].discarded, 1);
    /// ```
    pub fn on_handler_panic(
        mut self,
        hook: impl Fn(ActorId, &str) + Send + Sync + 'static,
    ) -> Self {
        self.panic_hooks.push(Arc::new(hook));
        self
    }

    /// Calls `hook` with the runtime once its shards run, before [`build`](Self::build)
    /// returns it: for layers that must act on the started runtime before anything else
    /// does (resuming state from a checkpoint, starting a coordinator that sends
    /// through the ingress). Hooks run in the order they were added; an `Err` from one
    /// shuts the runtime down again and `build` returns [`BuildError::Started`] with
    /// the message.
    ///
    /// ```
    /// use dirigo_runtime::{BuildError, Runtime};
    ///
    /// let runtime = Runtime::<u64>::builder()
    ///     .shards(1)
    ///     .on_started(|runtime| {
    ///         assert_eq!(runtime.shards(), 1);
    ///         Ok(())
    ///     })
    ///     .build()
    ///     .unwrap();
    /// runtime.shutdown();
    ///
    /// let refused = Runtime::<u64>::builder()
    ///     .shards(1)
    ///     .on_started(|_| Err("no state to resume from".to_owned()))
    ///     .build();
    /// assert!(matches!(refused, Err(BuildError::Started(message)) if message == "no state to resume from"));
    /// ```
    pub fn on_started(
        mut self,
        hook: impl FnOnce(&Runtime<M>) -> Result<(), String> + Send + 'static,
    ) -> Self {
        self.started_hooks.push(Box::new(hook));
        self
    }

    /// Calls `hook` with every message dropped because its app failed (see
    /// [`failure`](crate::failure)), just before it is dropped, on the shard where it
    /// arrived (keep it short). Discarded messages are counted per shard
    /// (`ShardStats::discarded`) whether or not a hook looks at them; a hook lets a layer
    /// above count what they carried. Hooks add up.
    pub fn on_discard(mut self, hook: impl Fn(&Envelope<M>) + Send + Sync + 'static) -> Self {
        self.discard_hooks.push(Arc::new(hook));
        self
    }

    /// The latency target of `app`, from an event's ingress to its output: its messages
    /// get deadlines (see [`scheduling`](crate::scheduling)). A zero SLO means none.
    pub fn app_slo(mut self, app: AppId, slo: Duration) -> Self {
        self.slos.insert(app, slo);
        self
    }

    /// Registers the factory for the actors of `operator` in `app`. Their state is
    /// [`StateKind::Exclusive`]: they never get lessees.
    pub fn operator(self, app: AppId, operator: OperatorId, factory: impl ActorFactory<M>) -> Self {
        self.register(app, operator, factory, StateKind::Exclusive)
    }

    fn register(
        mut self,
        app: AppId,
        operator: OperatorId,
        factory: impl ActorFactory<M>,
        state: StateKind,
    ) -> Self {
        self.factories.insert(app, operator, Arc::new(factory));
        self.operators.insert(app, operator, state);
        self
    }

    /// Registers the factory for the actors of `operator` in `app`, whose state is
    /// [`StateKind::Mergeable`]: they may get lessees, and implement
    /// [`Actor::snapshot`](crate::Actor::snapshot) and [`Actor::merge`](crate::Actor::merge).
    ///
    /// A per-key counter that spreads onto a second shard, and a critical message that
    /// reads the consolidated counts:
    ///
    /// ```
    /// use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime, Snapshot, SnapshotError};
    ///
    /// #[derive(Clone, Debug)]
    /// enum Msg {
    ///     Count(u64),
    ///     Report(flume::Sender<Vec<(u64, u64)>>),
    /// }
    ///
    /// #[derive(Default)]
    /// struct Counts(std::collections::BTreeMap<u64, u64>);
    ///
    /// impl Actor<Msg> for Counts {
    ///     fn receive(&mut self, _ctx: &mut Context<'_, Msg>, message: Envelope<Msg>) {
    ///         match message.payload {
    ///             Msg::Count(key) => *self.0.entry(key).or_default() += 1,
    ///             // Critical messages run on the lessor, on the consolidated state.
    ///             Msg::Report(reply) => reply.send(self.0.clone().into_iter().collect()).unwrap(),
    ///         }
    ///     }
    ///     fn snapshot(&mut self) -> Result<Option<Snapshot>, SnapshotError> {
    ///         let partial: Vec<(u64, u64)> = std::mem::take(&mut self.0).into_iter().collect();
    ///         Snapshot::of(&partial).map(Some)
    ///     }
    ///     fn merge(&mut self, partial: &Snapshot) -> Result<(), SnapshotError> {
    ///         for entry in partial.archived::<Vec<(u64, u64)>>()?.iter() {
    ///             *self.0.entry(entry.0.to_native()).or_default() += entry.1.to_native();
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let runtime = Runtime::<Msg>::builder()
    ///     .shards(2)
    ///     .mergeable_operator(0, 0, |_, _| Box::new(Counts::default()) as Box<dyn Actor<Msg>>)
    ///     .build()
    ///     .unwrap();
    /// let ingress = runtime.ingress();
    /// let counter = ActorId::new(0, 0, 0);
    /// let elsewhere = 1 - runtime.home_shard(counter);
    /// ingress.add_lessee(counter, elsewhere).unwrap();
    /// for key in 0..1000 {
    ///     ingress.send_to(counter, Msg::Count(key % 10)).unwrap();
    /// }
    /// let (reply, counts) = flume::bounded(1);
    /// ingress.send(Envelope::critical(counter, Msg::Report(reply))).unwrap();
    /// assert_eq!(counts.recv().unwrap(), (0..10).map(|key| (key, 100)).collect::<Vec<_>>());
    /// runtime.shutdown();
    /// ```
    pub fn mergeable_operator(
        self,
        app: AppId,
        operator: OperatorId,
        factory: impl ActorFactory<M>,
    ) -> Self {
        self.register(app, operator, factory, StateKind::Mergeable)
    }

    /// How many shards [`build`](Self::build) will start: what
    /// [`shards`](Self::shards) or [`cpus`](Self::cpus) asked for, else one per CPU this
    /// process may run on.
    pub fn planned_shards(&self) -> usize {
        match &self.cpus {
            Some(CpuSpec::Shards(shards)) => *shards,
            Some(CpuSpec::Cpus(cpus)) => cpus.len(),
            None => placement::available_cpus().len().max(1),
        }
    }

    /// Checks the machine, starts the shards, and returns once all of them run.
    pub fn build(self) -> Result<Runtime<M>, BuildError> {
        let spec = self
            .cpus
            .clone()
            .unwrap_or_else(|| CpuSpec::Shards(placement::available_cpus().len().max(1)));
        let mut placement = placement::decide(&spec, &placement::available_cpus())
            .map_err(BuildError::Placement)?;
        if !self.pin && placement.pinned() {
            placement.cpus.iter_mut().for_each(|cpu| *cpu = None);
            placement.unpinned_reason = Some("placement = unpinned was asked for".into());
        }
        if let Some(reason) = &placement.unpinned_reason {
            tracing::warn!("running {} shards unpinned: {reason}", placement.shards());
        }
        let preflight = preflight::preflight(placement.shards(), self.io_memory)
            .map_err(BuildError::Preflight)?;
        if !preflight.missing_opcodes.is_empty() {
            tracing::warn!(
                missing = ?preflight.missing_opcodes,
                "this kernel's io_uring lacks some opcodes; file and network I/O that needs them will fail"
            );
        }
        crate::huge_pages::apply(self.transparent_huge_pages);
        let asymmetric = crate::fence::init();
        tracing::debug!(asymmetric, "sleep/wake barrier mode");
        self.start(placement, preflight)
    }

    fn start(
        self,
        placement: Placement,
        preflight: PreflightReport,
    ) -> Result<Runtime<M>, BuildError> {
        let shards = placement.shards();
        let mut threads = Vec::with_capacity(shards);
        let mut starters = Vec::with_capacity(shards);
        let (ready_tx, ready_rx) = flume::unbounded::<(ShardId, Result<(), String>)>();
        for (shard, cpu) in placement.cpus.iter().copied().enumerate() {
            let (start_tx, start_rx) = flume::bounded::<ShardStart<M>>(1);
            let ready_tx = ready_tx.clone();
            let io_memory = self.io_memory;
            let thread = std::thread::Builder::new()
                .name(format!("dirigo-shard-{shard}"))
                .spawn(move || shard_thread(shard, cpu, io_memory, ready_tx, start_rx))
                .map_err(|error| BuildError::Executor {
                    shard,
                    error: error.to_string(),
                })?;
            threads.push(thread);
            starters.push(start_tx);
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((shard, Err(error))) => {
                    failure.get_or_insert(BuildError::Executor { shard, error });
                }
                Err(_) => {
                    failure.get_or_insert(BuildError::Executor {
                        shard: 0,
                        error: "a shard thread exited during start-up".into(),
                    });
                    break;
                }
            }
        }
        if let Some(error) = failure {
            // Dropping the starters tells every waiting shard thread to exit.
            drop(starters);
            for thread in threads {
                let _ = thread.join();
            }
            return Err(error);
        }

        let doorbells = threads
            .iter()
            .map(|thread| Doorbell::new(thread.thread().clone()))
            .collect();
        let mut receivers = Vec::with_capacity(shards);
        let intakes = (0..shards)
            .map(|_| {
                let (sender, receiver) = flume::bounded(self.intake_capacity);
                receivers.push(receiver);
                Intake {
                    sender,
                    posted: CachePadded::new(AtomicU64::new(0)),
                }
            })
            .collect();
        let operators = self.operators.operators_per_app();
        let factories = Arc::new(self.factories);
        let mut slo_ns = vec![0u64; operators.len()];
        for (&app, slo) in &self.slos {
            if let Some(entry) = slo_ns.get_mut(usize::from(app)) {
                *entry = slo.as_nanos().min(u128::from(u64::MAX / 2)) as u64;
            } else {
                tracing::warn!(app, "an SLO was set for an app without operators; ignored");
            }
        }
        let measure_costs = self.policy.wants_costs() || slo_ns.iter().any(|&slo| slo > 0);
        let turn_budget = self.turn_budget.unwrap_or_else(|| {
            crate::turn::budget_for(
                operators
                    .iter()
                    .zip(&slo_ns)
                    .filter(|(&operators, _)| operators > 0)
                    .map(|(_, &slo)| Duration::from_nanos(slo)),
            )
        });
        if self.turn_budget.is_none() && turn_budget != crate::turn::DEFAULT {
            // Once per process: a benchmark builds many runtimes of the same apps.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| tracing::info!(
                turn_budget_us = turn_budget.as_secs_f64() * 1e6,
                "apps with a tight SLO share this runtime: batches and shard turns are cut to this much work, so that their records wait less behind other apps (which costs those apps throughput; `turn_budget` sets it)"
            ));
        }
        // Both high-water marks default to four rings' worth of messages.
        let four_rings = self.ring_capacity.max(2).next_power_of_two() * 4;
        let shared = Arc::new(Shared {
            config: ShardConfig {
                spin_budget: self.spin_budget,
                turn_budget_ns: turn_budget.as_nanos() as u64,
                park_timeout: self.park_timeout,
                idle_deactivation: self.idle_deactivation,
                backlog_high_water: four_rings,
                mailbox_high_water: self.mailbox_high_water.unwrap_or(four_rings) as u64,
                handler_warning_ns: self.handler_warning.as_nanos().min(u128::from(u64::MAX))
                    as u64,
            },
            router: ShardRouter::new(shards),
            doorbells,
            counters: (0..shards).map(|_| CachePadded::default()).collect(),
            cpus: placement.cpus.clone(),
            stop: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            intakes,
            operators: self.operators,
            _factories_alive: factories.clone(),
            accepting: AtomicBool::new(true),
            accepted: CachePadded::new(AtomicU64::new(0)),
            live_metrics: (0..shards).map(|_| Mutex::default()).collect(),
            policy: self.policy,
            slo_ns,
            costs: CostTable::new(&operators),
            measure_costs,
            usage: UsageTable::new(shards, operators.len()),
            shed_hooks: self.shed_hooks,
            failures: Failures::new(operators.len(), self.panic_hooks),
            discard_hooks: self.discard_hooks,
        });
        let links = build_links(shards, self.ring_capacity);
        for ((starter, links), intake) in starters.iter().zip(links).zip(receivers) {
            starter
                .send(ShardStart {
                    shared: shared.clone(),
                    factories: factories.clone(),
                    links,
                    intake,
                })
                .expect("shard threads wait for their start");
        }
        let runtime = Runtime {
            shared,
            threads,
            placement,
            preflight,
            started: Instant::now(),
        };
        for hook in self.started_hooks {
            if let Err(message) = hook(&runtime) {
                runtime.shutdown();
                return Err(BuildError::Started(message));
            }
        }
        Ok(runtime)
    }
}

fn shard_thread<M: Send + 'static>(
    shard: ShardId,
    cpu: Option<usize>,
    io_memory: usize,
    ready: flume::Sender<(ShardId, Result<(), String>)>,
    start: flume::Receiver<ShardStart<M>>,
) -> ShardStats {
    let placement = match cpu {
        Some(cpu) => glommio::Placement::Fixed(cpu),
        None => glommio::Placement::Unbound,
    };
    let executor = glommio::LocalExecutorBuilder::new(placement)
        .name(&format!("dirigo-shard-{shard}"))
        .io_memory(io_memory)
        .make();
    let executor = match executor {
        Ok(executor) => {
            let _ = ready.send((shard, Ok(())));
            executor
        }
        Err(error) => {
            let _ = ready.send((shard, Err(error.to_string())));
            return ShardStats::default();
        }
    };
    drop(ready);
    let Ok(start) = start.recv() else {
        return ShardStats::default();
    };
    executor.run(Shard::new(shard, start).run())
}

/// A running dirigo runtime: one pinned glommio shard per core, the mesh between them,
/// and the virtual actors they host. See [`RuntimeBuilder`] for an example.
///
/// Dropping a runtime shuts it down the same way as [`Runtime::shutdown`].
pub struct Runtime<M: Send + 'static> {
    shared: Arc<Shared<M>>,
    threads: Vec<JoinHandle<ShardStats>>,
    placement: Placement,
    preflight: PreflightReport,
    started: Instant,
}

impl<M: Send + 'static> Runtime<M> {
    /// A builder with the documented defaults.
    pub fn builder() -> RuntimeBuilder<M> {
        RuntimeBuilder::default()
    }

    /// A handle for threads outside the runtime to send messages in.
    pub fn ingress(&self) -> Ingress<M> {
        Ingress::new(self.shared.clone())
    }

    /// How many shards run.
    pub fn shards(&self) -> usize {
        self.shared.shards()
    }

    /// The shards' turn budget (see [`RuntimeBuilder::turn_budget`]).
    pub fn turn_budget(&self) -> Duration {
        Duration::from_nanos(self.shared.config.turn_budget_ns)
    }

    /// Where each shard runs.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// What the preflight found.
    pub fn preflight(&self) -> &PreflightReport {
        &self.preflight
    }

    /// The home shard of `actor`.
    pub fn home_shard(&self, actor: ActorId) -> ShardId {
        self.shared.router.route(&actor)
    }

    /// Whether `shard` is parked right now (a hint).
    pub fn shard_sleeping(&self, shard: ShardId) -> bool {
        self.shared.doorbells[shard].is_sleeping()
    }

    /// Why `app` failed, if a handler of it panicked (see [`failure`](crate::failure));
    /// `None` while it has not. An example is at
    /// [`RuntimeBuilder::on_handler_panic`].
    pub fn app_failure(&self, app: AppId) -> Option<AppFailure> {
        self.shared.failures.get(app)
    }

    /// A live snapshot of every shard's counters.
    pub fn stats(&self) -> Vec<ShardStats> {
        self.stats_reader().stats()
    }

    /// A handle that takes [`stats`](Self::stats) from any thread, for as long as it is
    /// kept (after the runtime stopped too): for a monitor that runs beside the shards.
    ///
    /// ```
    /// use dirigo_runtime::Runtime;
    ///
    /// let runtime = Runtime::<u64>::builder().shards(1).pinned(false).build().unwrap();
    /// let reader = runtime.stats_reader();
    /// let watcher = std::thread::spawn(move || reader.stats().len());
    /// assert_eq!(watcher.join().unwrap(), 1);
    /// runtime.shutdown();
    /// ```
    pub fn stats_reader(&self) -> StatsReader<M> {
        StatsReader {
            shared: self.shared.clone(),
        }
    }

    /// The measured cost of every registered operator: its own handler cost and `C(o)`,
    /// which deadlines subtract (zero until measured; measured only while some app has an
    /// SLO or the policy asks for costs).
    pub fn operator_costs(&self) -> Vec<OperatorCosts> {
        self.shared.costs.snapshot()
    }

    /// What each app used so far: busy time in its handlers (measured while costs are
    /// measured: some app has an SLO, or the policy wants costs), and reserved
    /// shard-time (how long each shard hosted at least one of its actors, lessors or
    /// lessees, summed over shards).
    pub fn app_usage(&self) -> Vec<AppUsage> {
        self.shared.usage.snapshot(crate::clock::now())
    }

    /// The dual-mode metrics of every actor that has had critical messages or lessees:
    /// lessees over time, time blocked, consolidations. Shards publish them at most once
    /// a millisecond while busy, and before they park, so they may lag by that much.
    pub fn actor_metrics(&self) -> Vec<ActorMetrics> {
        let mut metrics: Vec<ActorMetrics> = self
            .shared
            .live_metrics
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        metrics.sort_by_key(|metrics| metrics.actor);
        metrics
    }

    /// Stops intake, waits until every accepted message (and everything it caused) has
    /// been handled, stops and joins the shards, and returns their final counters.
    pub fn shutdown(mut self) -> RuntimeReport {
        self.stop(None)
    }

    /// Like [`shutdown`](Self::shutdown), but gives up draining after `timeout` — for
    /// pipelines that never fall quiet, such as actors that keep sending to each other.
    /// Shards then stop where they are; the report says how many messages were still in
    /// flight (`RuntimeReport::abandoned`), and those are dropped.
    pub fn shutdown_within(mut self, timeout: Duration) -> RuntimeReport {
        self.stop(Some(Instant::now() + timeout))
    }

    /// Like [`shutdown_within`](Self::shutdown_within), and bounds the wait for the shard
    /// threads as well: a shard still inside a handler `join_within` after the drain
    /// ended is left to finish it on its own (it stops right after, and its thread ends
    /// with the process), and its counters are read as they stand. For a process that
    /// must exit within a bound whatever its handlers do.
    ///
    /// ```
    /// use std::time::Duration;
    /// use dirigo_runtime::{Actor, ActorId, Context, Envelope, Runtime};
    ///
    /// struct Slow;
    /// impl Actor<u32> for Slow {
    ///     fn receive(&mut self, _: &mut Context<'_, u32>, _: Envelope<u32>) {
    ///         std::thread::sleep(Duration::from_millis(300));
    ///     }
    /// }
    /// let runtime = Runtime::<u32>::builder()
    ///     .shards(1)
    ///     .operator(0, 0, |_, _| Box::new(Slow) as Box<dyn Actor<u32>>)
    ///     .build()
    ///     .unwrap();
    /// runtime.ingress().send_to(ActorId::new(0, 0, 0), 1).unwrap();
    /// std::thread::sleep(Duration::from_millis(50));
    /// let started = std::time::Instant::now();
    /// let report = runtime.shutdown_bounded(Duration::ZERO, Duration::from_millis(10));
    /// assert!(started.elapsed() < Duration::from_millis(250));
    /// assert_eq!(report.shards.len(), 1);
    /// ```
    pub fn shutdown_bounded(
        mut self,
        drain_within: Duration,
        join_within: Duration,
    ) -> RuntimeReport {
        self.shared.accepting.store(false, Ordering::SeqCst);
        let drained = self.wait_until_quiet(Some(Instant::now() + drain_within));
        let join_deadline = Instant::now() + join_within;
        self.halt(drained);
        let mut shards = Vec::with_capacity(self.threads.len());
        for (shard, thread) in self.threads.drain(..).enumerate() {
            while !thread.is_finished() && Instant::now() < join_deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                shards.push(Self::joined(shard, thread));
            } else {
                tracing::warn!(
                    shard,
                    "shard still inside a handler; left to end on its own"
                );
                shards.push(self.shared.counters[shard].snapshot(shard, self.shared.cpus[shard]));
            }
        }
        self.report(shards)
    }

    /// Stops intake and the shards; `drained`: whether they may finish what they hold.
    fn halt(&self, drained: bool) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        if !drained {
            self.shared.abort.store(true, Ordering::SeqCst);
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        for doorbell in self.shared.doorbells.iter() {
            doorbell.ring();
        }
    }

    /// A shard thread's final counters.
    fn joined(shard: usize, thread: JoinHandle<ShardStats>) -> ShardStats {
        thread.join().unwrap_or_else(|_| {
            tracing::error!(shard, "shard thread panicked");
            ShardStats {
                shard,
                ..ShardStats::default()
            }
        })
    }

    /// The report over `shards`, counting what is still in flight as abandoned.
    fn report(&self, shards: Vec<ShardStats>) -> RuntimeReport {
        let (created, handled) = self.shared.totals();
        let abandoned = created.saturating_sub(handled);
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                "shut down with messages still in flight; they were dropped"
            );
        }
        RuntimeReport {
            elapsed: self.started.elapsed(),
            shards,
            abandoned,
        }
    }

    fn stop(&mut self, deadline: Option<Instant>) -> RuntimeReport {
        self.shared.accepting.store(false, Ordering::SeqCst);
        let drained = self.wait_until_quiet(deadline);
        self.halt(drained);
        let shards = self
            .threads
            .drain(..)
            .enumerate()
            .map(|(shard, thread)| Self::joined(shard, thread))
            .collect();
        self.report(shards)
    }

    /// Waits until nothing is in flight: "created" equals "handled" in two consecutive
    /// reads of every shard's counters. Counters only grow, so two equal reads mean each
    /// shard was idle between its two reads, and all those intervals overlap at the
    /// moment the second read began.
    /// Returns `false` when it gave up: at `deadline`, or because a shard thread died.
    fn wait_until_quiet(&self, deadline: Option<Instant>) -> bool {
        let mut previous = None;
        loop {
            let totals = self.shared.totals();
            if totals.0 == totals.1 && previous == Some(totals) {
                return true;
            }
            previous = Some(totals);
            if self.threads.iter().any(JoinHandle::is_finished) {
                tracing::error!("a shard thread died; shutting down without draining");
                return false;
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl<M: Send + 'static> Drop for Runtime<M> {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            // Unwinding (a failed assertion, a panicking caller) must not wait forever for
            // work that may never finish: give it a moment, then abandon it.
            let deadline =
                std::thread::panicking().then(|| Instant::now() + Duration::from_secs(1));
            self.stop(deadline);
        }
    }
}

/// The final counters of a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeReport {
    /// From start to the end of shutdown.
    pub elapsed: Duration,
    /// Per shard.
    pub shards: Vec<ShardStats>,
    /// Messages still in flight when the shards stopped: zero after a drained shutdown,
    /// possibly more after [`Runtime::shutdown_within`] ran out of time.
    pub abandoned: u64,
}

impl RuntimeReport {
    /// Messages handled on all shards.
    pub fn handled(&self) -> u64 {
        self.shards.iter().map(|shard| shard.handled).sum()
    }
}
