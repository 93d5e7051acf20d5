//! How often the machine itself stops a running thread: interrupts, the hypervisor, other
//! tenants. Tail latencies below the size of these gaps cannot be measured here, so the
//! latency scenarios report them next to their own figures.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::pin::pin_current;

/// Gaps of at least this long count as the machine stopping the thread.
pub const GAP_NS: u64 = 10_000;

/// The stretch over which [`CpuNoise::worst_stretch_lost`] is taken.
pub const STRETCH_NS: u64 = 10_000_000;

/// What one CPU's spinning thread saw.
#[derive(Clone, Debug, Serialize)]
pub struct CpuNoise {
    /// The CPU (`None`: the thread was not pinned).
    pub cpu: Option<usize>,
    /// Gaps of at least `GAP_NS` between two clock readings, per second.
    pub gaps_per_s: f64,
    /// Their mean length, in nanoseconds.
    pub mean_gap_ns: f64,
    /// The longest, in nanoseconds.
    pub max_gap_ns: u64,
    /// Share of the time lost to them.
    pub stalled_fraction: f64,
    /// The largest share of any [`STRETCH_NS`] stretch lost to them (each gap counted in
    /// the stretch where it ends, capped at 1). A virtual machine's CPU can run at a
    /// fraction of its speed for tens of milliseconds: a pipeline loaded at half its
    /// capacity then falls behind however fast it is, and its tail latency shows it.
    pub worst_stretch_lost: f64,
}

/// Spins one pinned thread per CPU in `cpus` for `duration`, reading the clock in a tight
/// loop, and reports the gaps between readings.
pub fn measure(cpus: &[Option<usize>], duration: Duration) -> Vec<CpuNoise> {
    let threads: Vec<_> = cpus
        .iter()
        .copied()
        .map(|cpu| {
            std::thread::spawn(move || {
                pin_current(cpu);
                let started = Instant::now();
                let mut last = dirigo_runtime::clock::now();
                let (mut gaps, mut stalled, mut longest) = (0u64, 0u64, 0u64);
                let first = last;
                // The stretch being summed, what it lost so far, and the worst one.
                let (mut stretch, mut stretch_lost, mut worst) = (0u64, 0u64, 0u64);
                let mut reads = 0u32;
                loop {
                    let now = dirigo_runtime::clock::now();
                    let gap = now.saturating_sub(last);
                    last = now;
                    if gap >= GAP_NS {
                        gaps += 1;
                        stalled += gap;
                        longest = longest.max(gap);
                        let at = now.saturating_sub(first) / STRETCH_NS;
                        if at != stretch {
                            (stretch, stretch_lost) = (at, 0);
                        }
                        stretch_lost += gap;
                        worst = worst.max(stretch_lost);
                    }
                    reads = reads.wrapping_add(1);
                    if reads.is_multiple_of(4096) && started.elapsed() >= duration {
                        break;
                    }
                }
                let seconds = started.elapsed().as_secs_f64();
                CpuNoise {
                    cpu,
                    gaps_per_s: gaps as f64 / seconds,
                    mean_gap_ns: stalled as f64 / gaps.max(1) as f64,
                    max_gap_ns: longest,
                    stalled_fraction: stalled as f64 / (seconds * 1e9),
                    worst_stretch_lost: (worst as f64 / STRETCH_NS as f64).min(1.0),
                }
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|thread| thread.join().expect("noise threads do not panic"))
        .collect()
}

/// The cheapest round trip between two CPUs, sampled at a fixed cadence: one thread
/// stores a ping into a cache line every `period_ns` (spinning in between, as a busy
/// shard does), another thread spins on it and answers through a second line; each
/// sample is from the ping's store to the answer seen. A protocol that needs a round trip
/// between the two CPUs cannot do better at any percentile, so this is the tail the
/// machine alone puts on a latency measured that often: a sample that starts while the
/// other CPU is stopped waits for the rest of the stop. Returns the histogram of samples
/// (nanoseconds) taken over `duration`.
pub fn paced_round_trips(
    cpus: [Option<usize>; 2],
    period_ns: u64,
    duration: Duration,
) -> hdrhistogram::Histogram<u64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use crossbeam_utils::CachePadded;
    use dirigo_runtime::clock;

    let period_ns = period_ns.max(1);
    // A thread of its own, so that pinning it leaves the caller's CPU mask alone (later
    // runtimes take their CPUs from it).
    std::thread::spawn(move || {
        let ping = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let pong = Arc::new(CachePadded::new(AtomicU64::new(0)));
        let echo = {
            let (ping, pong) = (ping.clone(), pong.clone());
            std::thread::spawn(move || {
                pin_current(cpus[1]);
                let mut answered = 0;
                loop {
                    let seen = ping.load(Ordering::Acquire);
                    if seen == u64::MAX {
                        break;
                    }
                    if seen != answered {
                        answered = seen;
                        pong.store(seen, Ordering::Release);
                    }
                    std::hint::spin_loop();
                }
            })
        };
        pin_current(cpus[0]);
        let mut histogram = crate::latency::new_histogram();
        let started = clock::now();
        let end = started + duration.as_nanos() as u64;
        let mut next = started;
        for i in 1.. {
            next += period_ns;
            let mut now = clock::now();
            while now < next {
                std::hint::spin_loop();
                now = clock::now();
            }
            if now >= end {
                break;
            }
            let start = clock::raw();
            ping.store(i, Ordering::Release);
            while pong.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            crate::latency::record(&mut histogram, clock::raw_delta_ns(start, clock::raw()));
            // A sample that ran past the next ping's time sends the next one at once,
            // not a burst to catch up: each sample stays one round trip.
            next = next.max(clock::now().saturating_sub(period_ns));
        }
        ping.store(u64::MAX, Ordering::Release);
        echo.join().expect("the echo thread does not panic");
        histogram
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// One line per CPU, for report tables.
pub fn describe(noise: &[CpuNoise]) -> String {
    noise
        .iter()
        .map(|cpu| {
            format!(
                "  machine noise, CPU {}: stopped >= {} us {:.0} times/s, {:.1} us on average (max {:.0} us), {:.1}% of the time, {:.0}% of the worst {} ms\n",
                cpu.cpu.map_or_else(|| "?".to_string(), |id| id.to_string()),
                GAP_NS / 1000,
                cpu.gaps_per_s,
                cpu.mean_gap_ns / 1000.0,
                cpu.max_gap_ns as f64 / 1000.0,
                cpu.stalled_fraction * 100.0,
                cpu.worst_stretch_lost * 100.0,
                STRETCH_NS / 1_000_000
            )
        })
        .collect()
}

/// Time the hypervisor ran something else while a CPU of this virtual machine had work
/// (the `steal` column of `/proc/stat`), per CPU, in nanoseconds since boot. Read before
/// and after a run, it says how much of the run the machine took away: a run whose tail
/// is long because the machine stalled for hundreds of milliseconds shows it here. `None`
/// where `/proc/stat` cannot be read (not Linux); zero on bare metal.
pub fn stolen_ns() -> Option<Vec<(usize, u64)>> {
    parse_stolen_ns(
        &std::fs::read_to_string("/proc/stat").ok()?,
        clock_ticks_per_s(),
    )
}

/// What each CPU in `cpus` had stolen between two [`stolen_ns`] readings, in
/// nanoseconds (the kernel counts in clock ticks, so this moves in steps of 10 ms on
/// most systems). Empty when either reading is missing.
pub fn stolen_between(
    before: &Option<Vec<(usize, u64)>>,
    after: &Option<Vec<(usize, u64)>>,
    cpus: &[Option<usize>],
) -> Vec<u64> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    let reading = |readings: &[(usize, u64)], cpu: usize| {
        readings
            .iter()
            .find(|(id, _)| *id == cpu)
            .map_or(0, |(_, stolen)| *stolen)
    };
    cpus.iter()
        .map(|cpu| match cpu {
            Some(cpu) => reading(after, *cpu).saturating_sub(reading(before, *cpu)),
            // An unpinned thread ran anywhere: count the whole machine.
            None => after
                .iter()
                .map(|(_, stolen)| stolen)
                .sum::<u64>()
                .saturating_sub(before.iter().map(|(_, stolen)| stolen).sum()),
        })
        .collect()
}

/// One line for report tables: what the machine took from each CPU during the run.
pub fn describe_stolen(stolen: &[u64], cpus: &[Option<usize>]) -> String {
    if stolen.is_empty() {
        return String::new();
    }
    let each: Vec<String> = stolen
        .iter()
        .zip(cpus)
        .map(|(stolen, cpu)| {
            format!(
                "CPU {} {:.0} ms",
                cpu.map_or_else(|| "?".to_string(), |id| id.to_string()),
                *stolen as f64 / 1e6
            )
        })
        .collect();
    format!(
        "  stolen by the hypervisor during the run: {}\n",
        each.join(", ")
    )
}

fn clock_ticks_per_s() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn parse_stolen_ns(stat: &str, ticks_per_s: u64) -> Option<Vec<(usize, u64)>> {
    let ns_per_tick = 1_000_000_000 / ticks_per_s.max(1);
    let cpus: Vec<(usize, u64)> = stat
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?.parse::<usize>().ok()?;
            // user nice system idle iowait irq softirq steal
            let steal = fields.nth(7)?.parse::<u64>().ok()?;
            Some((cpu, steal.saturating_mul(ns_per_tick)))
        })
        .collect();
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_read_per_cpu_from_proc_stat() {
        let stat = "cpu  7970446 0 397537 5672633 22474 0 9510 233839 0 0\n\
                    cpu0 4158942 0 211864 2652119 12351 0 3014 103671 0 0\n\
                    cpu1 3811504 0 185672 3020513 10122 0 6496 130167 0 0\n\
                    intr 1 2 3\n";
        let before = parse_stolen_ns(stat, 100);
        assert_eq!(
            before,
            Some(vec![(0, 1_036_710_000_000), (1, 1_301_670_000_000)])
        );
        let after = parse_stolen_ns(&stat.replace("103671", "103676"), 100);
        assert_eq!(
            stolen_between(&before, &after, &[Some(0), Some(1)]),
            vec![50_000_000, 0]
        );
        assert_eq!(stolen_between(&before, &after, &[None]), vec![50_000_000]);
        assert!(stolen_between(&None, &after, &[Some(0)]).is_empty());
        assert!(describe_stolen(&[50_000_000, 0], &[Some(0), Some(1)]).contains("CPU 0 50 ms"));
        assert_eq!(parse_stolen_ns("intr 1 2\n", 100), None);
        assert!(clock_ticks_per_s() >= 1);
        if cfg!(target_os = "linux") {
            assert!(stolen_ns().is_some_and(|cpus| !cpus.is_empty()));
        }
    }

    #[test]
    fn paced_round_trips_take_one_sample_per_period() {
        let samples = paced_round_trips([None, None], 100_000, Duration::from_millis(50));
        // At most one per period (about 500); unpinned threads on a busy machine may
        // take far fewer.
        assert!(
            (1..=501).contains(&samples.len()),
            "{} samples",
            samples.len()
        );
        assert!(samples.min() >= 1);
    }

    #[test]
    fn a_short_measurement_reports_each_cpu() {
        let noise = measure(&[None, None], Duration::from_millis(20));
        assert_eq!(noise.len(), 2);
        for cpu in &noise {
            assert!(cpu.stalled_fraction >= 0.0 && cpu.stalled_fraction <= 1.0);
            assert!(cpu.worst_stretch_lost >= 0.0 && cpu.worst_stretch_lost <= 1.0);
            assert!(
                cpu.worst_stretch_lost * STRETCH_NS as f64 + 1.0
                    >= cpu.max_gap_ns.min(STRETCH_NS) as f64
            );
        }
        assert_eq!(describe(&noise).lines().count(), 2);
    }
}
