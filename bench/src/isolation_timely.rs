//! The timely-dataflow side of `dirigo bench isolation`: the latency-critical filter and
//! the bursty sliding-window count as two dataflows in one set of timely workers, fed
//! open loop on the workload's schedule (see [`crate::isolation`]).
//!
//! Each worker feeds its share of both inputs (records `w, w + workers, …`, as dirigo's
//! source partitions split them) whose intended send time has come, advances each
//! input's time to the event time of the last record due (the watermark of in-order
//! input), flushes both inputs, and steps the workers' dataflows; it never waits for the
//! pipelines. timely has no priorities: a step runs every operator that has input, so a
//! backlog of the heavy dataflow delays the critical one's next feed and step.
//!
//! Latency is measured as on dirigo's side: a critical record from its own intended send
//! time to when the filter's output is observed; a window's rows from the intended send
//! time of the heavy record that closed the window (the first at or past its end) to when
//! they leave the window operator.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;
use std::rc::Rc;
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Filter;
use timely::dataflow::operators::{Capability, Inspect, Operator, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Stream};

use crate::isolation::{keeps, RunFigures, Workload};

/// Counts per key, with the hasher dirigo's operators use.
type Counts = HashMap<u64, u64, BuildHasherDefault<rustc_hash::FxHasher>>;

/// One run of both dataflows in `workers` timely workers.
pub fn run(workload: &Workload, workers: usize) -> RunFigures {
    let workers = workers.max(1);
    let barrier = Arc::new(Barrier::new(workers));
    let start = Arc::new(OnceLock::<Instant>::new());
    let guards = timely::execute(timely::Config::process(workers), {
        let (workload, start) = (workload.clone(), start.clone());
        move |worker| {
            let (index, peers) = (worker.index(), worker.peers());
            let mut critical_in = InputHandleVec::<u64, (u64, u64)>::new();
            let mut heavy_in = InputHandleVec::<u64, (u64, u64)>::new();
            let (critical_probe, heavy_probe) = (ProbeHandle::new(), ProbeHandle::new());
            let figures = Rc::new(RefCell::new(WorkerFigures::default()));
            worker.dataflow::<u64, _, _>(|scope| {
                let (figures, start) = (figures.clone(), start.clone());
                let critical = workload.critical.clone();
                critical_in
                    .to_stream(scope)
                    .filter(|&(_, index)| keeps(index))
                    .inspect_core(move |event| {
                        let Ok((_, records)) = event else { return };
                        let start = *start.get().expect("the clock started before data");
                        let observed = start.elapsed().as_nanos() as u64;
                        let mut figures = figures.borrow_mut();
                        for &(_, index) in records.iter() {
                            let due = critical.due_ns(index as usize);
                            crate::latency::record(
                                &mut figures.critical,
                                observed.saturating_sub(due),
                            );
                        }
                    })
                    .probe_with(&critical_probe);
            });
            worker.dataflow::<u64, _, _>(|scope| {
                let (figures, start) = (figures.clone(), start.clone());
                let heavy = workload.heavy.clone();
                let (size, slide) = (workload.window_ms, workload.slide_ms);
                sliding_count(heavy_in.to_stream(scope), size, slide)
                    .inspect_core(move |event| {
                        let Ok((_, rows)) = event else { return };
                        if rows.is_empty() {
                            return;
                        }
                        let start = *start.get().expect("the clock started before data");
                        let observed = start.elapsed().as_nanos() as u64;
                        let mut figures = figures.borrow_mut();
                        for &(end, _, _) in rows.iter() {
                            let due = heavy.closing_due_ns(end);
                            crate::latency::record(
                                &mut figures.heavy,
                                observed.saturating_sub(due),
                            );
                        }
                        figures.rows += rows.len() as u64;
                    })
                    .probe_with(&heavy_probe);
            });
            barrier.wait();
            let start = *start.get_or_init(Instant::now);

            let critical = &workload.critical;
            let heavy = &workload.heavy;
            let (mut next_critical, mut next_heavy) = (index, index);
            let (mut critical_due, mut heavy_due) = (0, 0);
            while critical_due < critical.len() || heavy_due < heavy.len() {
                let elapsed = start.elapsed().as_nanos() as u64;
                critical_due = critical.due_by(elapsed);
                heavy_due = heavy.due_by(elapsed);
                while next_critical < critical_due {
                    critical_in.send(critical.records[next_critical]);
                    next_critical += peers;
                }
                while next_heavy < heavy_due {
                    heavy_in.send(heavy.records[next_heavy]);
                    next_heavy += peers;
                }
                for (input, due, records) in [
                    (&mut critical_in, critical_due, &critical.records),
                    (&mut heavy_in, heavy_due, &heavy.records),
                ] {
                    if due > 0 {
                        let watermark = records[due - 1].0;
                        if watermark > *input.time() {
                            input.advance_to(watermark);
                        }
                    }
                    input.flush();
                }
                let next_due = [
                    critical.next_due_after(critical_due),
                    heavy.next_due_after(heavy_due),
                ]
                .into_iter()
                .flatten()
                .min();
                match next_due {
                    Some(due) if due > elapsed + 100_000 => {
                        let wait = (due - elapsed).min(1_000_000);
                        worker.step_or_park(Some(Duration::from_nanos(wait)));
                    }
                    _ => {
                        worker.step();
                    }
                }
            }
            drop(critical_in);
            drop(heavy_in);
            let mut heavy_done = None;
            while !(critical_probe.done() && heavy_probe.done()) {
                worker.step();
                if heavy_done.is_none() && heavy_probe.done() {
                    heavy_done = Some(start.elapsed());
                }
            }
            let heavy_done = heavy_done.unwrap_or_else(|| start.elapsed());
            let figures = figures.borrow();
            (
                figures.critical.clone(),
                figures.heavy.clone(),
                figures.rows,
                heavy_done,
            )
        }
    })
    .expect("timely starts");
    let mut figures = RunFigures::empty();
    for result in guards.join() {
        let (critical, heavy, rows, heavy_done) = result.expect("a timely worker panicked");
        figures
            .critical
            .add(&critical)
            .expect("histograms share bounds");
        figures.heavy.add(&heavy).expect("histograms share bounds");
        figures.heavy_rows += rows;
        figures.heavy_seconds = figures.heavy_seconds.max(heavy_done.as_secs_f64());
    }
    figures.heavy_records = workload.heavy.len() as u64;
    figures
}

/// What one worker observed.
struct WorkerFigures {
    critical: Histogram<u64>,
    heavy: Histogram<u64>,
    rows: u64,
}

impl Default for WorkerFigures {
    fn default() -> Self {
        Self {
            critical: crate::latency::new_histogram(),
            heavy: crate::latency::new_histogram(),
            rows: 0,
        }
    }
}

/// The heavy dataflow's window operator: exchange by key, count per `(window, key)` in
/// every aligned sliding window a record belongs to (windows `[k * slide, k * slide +
/// size)`, as dirigo's), and emit a window's rows `(end, key, count)` once the frontier
/// has passed `end - 1`.
fn sliding_count<'s>(
    records: Stream<'s, u64, Vec<(u64, u64)>>,
    size: u64,
    slide: u64,
) -> Stream<'s, u64, Vec<(u64, u64, u64)>> {
    records.unary_frontier::<CapacityContainerBuilder<Vec<(u64, u64, u64)>>, _, _, _>(
        Exchange::new(|&(_, key): &(u64, u64)| crate::isolation::key_route(key)),
        "SlidingCount",
        move |_initial, _info| {
            let mut windows: BTreeMap<u64, (Capability<u64>, Counts)> = BTreeMap::new();
            move |(input, frontier), output| {
                let port = output.output_index();
                input.for_each(|cap, data| {
                    for &(t, key) in data.iter() {
                        crate::isolation::window_ends(t, size, slide, |end| {
                            let (_, counts) = windows.entry(end).or_insert_with(|| {
                                (cap.delayed(&(end - 1), port), Counts::default())
                            });
                            *counts.entry(key).or_insert(0) += 1;
                        });
                    }
                });
                while let Some(entry) = windows.first_entry() {
                    let end = *entry.key();
                    if frontier.less_equal(&(end - 1)) {
                        break;
                    }
                    let (cap, counts) = entry.remove();
                    let mut session = output.session(&cap);
                    session.give_iterator(counts.into_iter().map(|(key, count)| (end, key, count)));
                }
            }
        },
    )
}
