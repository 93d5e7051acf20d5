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
                    if reads % 4096 == 0 && started.elapsed() >= duration {
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

#[cfg(test)]
mod tests {
    use super::*;

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
