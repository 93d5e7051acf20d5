//! Load shapes for open-loop sources: how many events per second a source offers over
//! time, and the [`Schedule`] of intended send times that follows from a shape.
//!
//! An open-loop source sends each event at its *intended* time whether or not the
//! pipeline keeps up, so latency is measured from the intended time (no coordinated
//! omission). For the deterministic shapes the `i`-th event (counting from 0) is due when
//! the integral of the rate from 0 reaches `i`, computed in closed form (or, for
//! [`LoadShape::Sine`], by a safeguarded Newton solve within one period), so there is no
//! drift over long runs: a constant 1000 events/s gives exactly `i * 1_000_000` ns.
//! [`LoadShape::Poisson`] draws exponential inter-arrival times from a [`SmallRng`]
//! seeded from the schedule's seed.
//!
//! Shapes are read from configuration as internally tagged JSON (or TOML), e.g.
//! `{"shape": "step", "from": 1000, "to": 5000, "at_s": 30}`.

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use std::f64::consts::TAU;

/// Nanoseconds per second, as a float.
const NS_PER_S: f64 = 1e9;

/// How fast an open-loop source offers events over time. Rates are in events per second,
/// times in seconds since the start of the run.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadShape {
    /// A constant rate, evenly spaced.
    Constant {
        /// Events per second.
        rate: f64,
    },
    /// `from` events/s until `at_s`, then `to` events/s.
    Step {
        /// Events per second before `at_s`.
        from: f64,
        /// Events per second from `at_s` on.
        to: f64,
        /// When the rate changes, seconds since the start.
        at_s: f64,
    },
    /// `mean + amplitude * sin(2π t / period_s)` events/s: starts at the mean, rising.
    Sine {
        /// The mean rate, events per second.
        mean: f64,
        /// How far the rate swings above and below the mean; less than `mean`.
        amplitude: f64,
        /// The period of one swing, seconds.
        period_s: f64,
    },
    /// `base` events/s, with a burst of `burst` events/s for `length_s` seconds at every
    /// multiple of `every_s`, starting at `every_s` (so a run begins with `every_s`
    /// seconds of base load): bursts cover `[k * every_s, k * every_s + length_s)` for
    /// `k >= 1`.
    Bursts {
        /// Events per second outside bursts.
        base: f64,
        /// Events per second during a burst.
        burst: f64,
        /// Seconds from the start of one burst to the start of the next.
        every_s: f64,
        /// How long a burst lasts, seconds; less than `every_s`.
        length_s: f64,
    },
    /// A Poisson process: exponential inter-arrival times with mean `1 / rate`.
    Poisson {
        /// Mean events per second.
        rate: f64,
    },
}

/// Checks that `value` is finite and greater than zero.
fn positive(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a finite number greater than 0, found {value}"
        ))
    }
}

/// The lowest rate a shape may ask for, events per second: one event every 1000 s.
/// Lower rates are a slip (a rate of 1e-300 is never meant), and a source due so rarely
/// would look idle for the whole run.
pub const MIN_RATE: f64 = 1e-3;

/// The highest rate a shape may ask for, events per second: far above what a machine
/// produces, so that due times stay whole nanoseconds apart.
pub const MAX_RATE: f64 = 1e9;

/// The longest time a shape may name (`at_s`, `period_s`, `every_s`, `length_s`), in
/// seconds: about 115 days, the longest run.
pub const MAX_SHAPE_SECONDS: f64 = 1e7;

/// Checks that a rate lies in [`MIN_RATE`]`..=`[`MAX_RATE`].
fn rate(name: &str, value: f64) -> Result<(), String> {
    if (MIN_RATE..=MAX_RATE).contains(&value) {
        Ok(())
    } else {
        Err(format!(
            "{name} must be from {MIN_RATE:?} to {MAX_RATE:e} events per second, found {value:?}"
        ))
    }
}

/// Checks that a time in seconds is at most [`MAX_SHAPE_SECONDS`].
fn seconds(name: &str, value: f64) -> Result<(), String> {
    if value <= MAX_SHAPE_SECONDS {
        Ok(())
    } else {
        Err(format!(
            "{name} must be at most {MAX_SHAPE_SECONDS:e} s, found {value:?}"
        ))
    }
}

/// Checks that `value` is finite and not negative.
fn non_negative(name: &str, value: f64) -> Result<(), String> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a finite number of at least 0, found {value}"
        ))
    }
}

impl LoadShape {
    /// Checks the shape's parameters: every rate (for `sine`, the lowest and the highest)
    /// from [`MIN_RATE`] to [`MAX_RATE`], every time at most [`MAX_SHAPE_SECONDS`], `at_s` finite
    /// and not negative, `amplitude` in `[0, mean)` (so the rate never reaches 0),
    /// `period_s` and `every_s` greater than 0, and `length_s` in `(0, every_s)`. The
    /// error names the shape and the offending parameter.
    pub fn validate(&self) -> Result<(), String> {
        let checked = match *self {
            LoadShape::Constant { rate: r } => positive("rate", r).and(rate("rate", r)),
            LoadShape::Poisson { rate: r } => positive("rate", r).and(rate("rate", r)),
            LoadShape::Step { from, to, at_s } => positive("from", from)
                .and(positive("to", to))
                .and(non_negative("at_s", at_s))
                .and(rate("from", from))
                .and(rate("to", to))
                .and(seconds("at_s", at_s)),
            LoadShape::Sine {
                mean,
                amplitude,
                period_s,
            } => positive("mean", mean)
                .and(non_negative("amplitude", amplitude))
                .and(positive("period_s", period_s))
                .and(if amplitude < mean {
                    Ok(())
                } else {
                    Err(format!(
                        "amplitude must be less than mean (the rate must stay above 0), \
                         found amplitude {amplitude} and mean {mean}"
                    ))
                })
                .and(rate("mean - amplitude", mean - amplitude))
                .and(rate("mean + amplitude", mean + amplitude))
                .and(seconds("period_s", period_s)),
            LoadShape::Bursts {
                base,
                burst,
                every_s,
                length_s,
            } => positive("base", base)
                .and(positive("burst", burst))
                .and(positive("every_s", every_s))
                .and(positive("length_s", length_s))
                .and(if length_s < every_s {
                    Ok(())
                } else {
                    Err(format!(
                        "length_s must be less than every_s, found length_s {length_s} \
                         and every_s {every_s}"
                    ))
                })
                .and(rate("base", base))
                .and(rate("burst", burst))
                .and(seconds("every_s", every_s)),
        };
        checked.map_err(|e| format!("load shape `{}`: {e}", self.name()))
    }

    /// The shape's name as written in configuration (`"constant"`, `"step"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            LoadShape::Constant { .. } => "constant",
            LoadShape::Step { .. } => "step",
            LoadShape::Sine { .. } => "sine",
            LoadShape::Bursts { .. } => "bursts",
            LoadShape::Poisson { .. } => "poisson",
        }
    }

    /// The intended rate at `t_s` seconds since the start, events per second (the mean
    /// rate for [`LoadShape::Poisson`]). Times before 0 are treated as 0.
    pub fn rate_at(&self, t_s: f64) -> f64 {
        let t_s = t_s.max(0.0);
        match *self {
            LoadShape::Constant { rate } | LoadShape::Poisson { rate } => rate,
            LoadShape::Step { from, to, at_s } => {
                if t_s < at_s {
                    from
                } else {
                    to
                }
            }
            LoadShape::Sine {
                mean,
                amplitude,
                period_s,
            } => mean + amplitude * (TAU * t_s / period_s).sin(),
            LoadShape::Bursts {
                base,
                burst,
                every_s,
                length_s,
            } => {
                if t_s >= every_s && t_s % every_s < length_s {
                    burst
                } else {
                    base
                }
            }
        }
    }

    /// The schedule of intended send times, in nanoseconds since the start. Deterministic
    /// shapes ignore `seed`; [`LoadShape::Poisson`] gives the same times for the same
    /// seed.
    ///
    /// # Panics
    ///
    /// If the shape is invalid (see [`LoadShape::validate`]); validate configuration
    /// first.
    pub fn schedule(&self, seed: u64) -> Schedule {
        if let Err(e) = self.validate() {
            panic!("LoadShape::schedule on an invalid shape: {e}");
        }
        let inner = match *self {
            LoadShape::Poisson { rate } => Inner::Poisson {
                rng: SmallRng::seed_from_u64(seed),
                // `validate` checked that the rate is finite and positive.
                gap: Exp::new(rate).expect("a validated rate is positive"),
                t_s: 0.0,
                first: true,
            },
            _ => Inner::Deterministic {
                shape: self.clone(),
                next: 0,
                last_ns: 0,
            },
        };
        Schedule { inner }
    }

    /// When the integral of a deterministic shape's rate reaches `events`, nanoseconds
    /// since the start (not yet rounded).
    fn time_of_ns(&self, events: f64) -> f64 {
        match *self {
            LoadShape::Constant { rate } | LoadShape::Poisson { rate } => {
                events_to_ns(events, rate)
            }
            LoadShape::Step { from, to, at_s } => {
                let before = from * at_s;
                if events < before {
                    events_to_ns(events, from)
                } else {
                    at_s * NS_PER_S + events_to_ns(events - before, to)
                }
            }
            LoadShape::Sine {
                mean,
                amplitude,
                period_s,
            } => {
                let per_period = mean * period_s;
                let periods = (events / per_period).floor();
                let rest = (events - periods * per_period).clamp(0.0, per_period);
                (periods * period_s + sine_solve(mean, amplitude, period_s, rest)) * NS_PER_S
            }
            LoadShape::Bursts {
                base,
                burst,
                every_s,
                length_s,
            } => {
                let first = base * every_s;
                if events < first {
                    return events_to_ns(events, base);
                }
                let in_burst = burst * length_s;
                let per_period = in_burst + base * (every_s - length_s);
                let after_first = events - first;
                let periods = (after_first / per_period).floor();
                let rest = (after_first - periods * per_period).clamp(0.0, per_period);
                let start_s = every_s + periods * every_s;
                if rest < in_burst {
                    start_s * NS_PER_S + events_to_ns(rest, burst)
                } else {
                    (start_s + length_s) * NS_PER_S + events_to_ns(rest - in_burst, base)
                }
            }
        }
    }
}

/// How long `events` events take at a constant `rate`, nanoseconds. Exact (rounded to
/// the nearest nanosecond) when both are whole numbers.
fn events_to_ns(events: f64, rate: f64) -> f64 {
    match (whole(events), whole(rate)) {
        (Some(n), Some(r)) if r > 0 => exact_ns(n, r) as f64,
        _ => events / rate * NS_PER_S,
    }
}

/// `n / r` seconds in nanoseconds, rounded to the nearest, saturating at `u64::MAX`.
fn exact_ns(n: u64, r: u64) -> u64 {
    let (n, r) = (u128::from(n), u128::from(r));
    let ns = (n * 2_000_000_000 + r) / (2 * r);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// `x` as a `u64` when it is a whole number that fits.
fn whole(x: f64) -> Option<u64> {
    // 2^64 as a float; anything below it that is whole converts exactly.
    ((0.0..18_446_744_073_709_551_616.0).contains(&x) && x.fract() == 0.0).then_some(x as u64)
}

/// The time `t` in `[0, period_s]` at which the integral of
/// `mean + amplitude * sin(2π t / period_s)` from 0 reaches `events`, seconds. Newton's
/// method, falling back to bisection whenever a step leaves the bracket.
fn sine_solve(mean: f64, amplitude: f64, period_s: f64, events: f64) -> f64 {
    let omega = TAU / period_s;
    let integral = |t: f64| mean * t + amplitude / omega * (1.0 - (omega * t).cos());
    let rate = |t: f64| mean + amplitude * (omega * t).sin();
    let (mut lo, mut hi) = (0.0, period_s);
    let mut t = (events / mean).clamp(lo, hi);
    for _ in 0..100 {
        let f = integral(t) - events;
        if f == 0.0 {
            break;
        }
        if f > 0.0 {
            hi = t;
        } else {
            lo = t;
        }
        let mut next = t - f / rate(t);
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        let step = (next - t).abs();
        t = next;
        if step <= 1e-13 * period_s.max(1.0) {
            break;
        }
    }
    t
}

/// Intended send times of an open-loop source, nanoseconds since the start, in
/// non-decreasing order; unbounded (take as many as the run needs). Made by
/// [`LoadShape::schedule`].
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The shape-specific state.
    inner: Inner,
}

/// A [`Schedule`]'s state.
#[derive(Clone, Debug)]
enum Inner {
    /// A deterministic shape: the next event's index, and the last time given (to keep
    /// the times monotone despite rounding).
    Deterministic {
        /// The shape.
        shape: LoadShape,
        /// Index of the next event.
        next: u64,
        /// The last time given, nanoseconds.
        last_ns: u64,
    },
    /// A Poisson process.
    Poisson {
        /// The seeded generator.
        rng: SmallRng,
        /// Inter-arrival times, seconds.
        gap: Exp<f64>,
        /// The last arrival, seconds since the start.
        t_s: f64,
        /// Whether the next arrival is the first (sent at 0).
        first: bool,
    },
}

/// A float number of nanoseconds as `u64`, rounded to the nearest (saturating).
fn round_ns(ns: f64) -> u64 {
    // `as` saturates, and maps NaN to 0.
    ns.round() as u64
}

impl Iterator for Schedule {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        match &mut self.inner {
            Inner::Deterministic {
                shape,
                next,
                last_ns,
            } => {
                // A whole constant rate is exact at any index, in integers.
                let whole_rate = match *shape {
                    LoadShape::Constant { rate } => whole(rate).filter(|&r| r > 0),
                    _ => None,
                };
                let ns = match whole_rate {
                    Some(rate) => exact_ns(*next, rate),
                    None => round_ns(shape.time_of_ns(*next as f64)),
                };
                let ns = ns.max(*last_ns);
                *last_ns = ns;
                *next = next.saturating_add(1);
                Some(ns)
            }
            Inner::Poisson {
                rng,
                gap,
                t_s,
                first,
            } => {
                if *first {
                    *first = false;
                } else {
                    *t_s += gap.sample(rng);
                }
                Some(round_ns(*t_s * NS_PER_S))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::MAX, None)
    }

    /// Skips `n` events in constant time for deterministic shapes.
    fn nth(&mut self, n: usize) -> Option<u64> {
        match &mut self.inner {
            Inner::Deterministic { next, .. } => {
                *next = next.saturating_add(n as u64);
                self.next()
            }
            Inner::Poisson { .. } => {
                for _ in 0..n {
                    self.next();
                }
                self.next()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many of `times` fall in `[from_s, to_s)`.
    fn count_in(times: &[u64], from_s: f64, to_s: f64) -> usize {
        let (from, to) = ((from_s * NS_PER_S) as u64, (to_s * NS_PER_S) as u64);
        times.iter().filter(|&&t| t >= from && t < to).count()
    }

    /// The schedule's times before `end_s`.
    fn until(shape: &LoadShape, end_s: f64) -> Vec<u64> {
        let end = (end_s * NS_PER_S) as u64;
        let times: Vec<u64> = shape.schedule(7).take_while(|&t| t < end).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "not monotone");
        times
    }

    #[test]
    fn constant_spacing_is_exact() {
        let shape = LoadShape::Constant { rate: 1000.0 };
        for (i, t) in shape.schedule(0).take(100_000).enumerate() {
            assert_eq!(t, i as u64 * 1_000_000);
        }
        // Far into a run, too.
        let mut far = shape.schedule(0);
        assert_eq!(far.nth(10_000_000_000), Some(10_000_000_000_000_000));
        assert_eq!(far.next(), Some(10_000_000_001_000_000));
    }

    #[test]
    fn constant_fractional_rate() {
        let shape = LoadShape::Constant { rate: 2.5 };
        let times: Vec<u64> = shape.schedule(0).take(4).collect();
        assert_eq!(times, vec![0, 400_000_000, 800_000_000, 1_200_000_000]);
        let third = LoadShape::Constant { rate: 3.0 };
        let times: Vec<u64> = third.schedule(0).take(4).collect();
        assert_eq!(times, vec![0, 333_333_333, 666_666_667, 1_000_000_000]);
    }

    #[test]
    fn step_switches_rate() {
        let shape = LoadShape::Step {
            from: 100.0,
            to: 1000.0,
            at_s: 2.0,
        };
        let times = until(&shape, 4.0);
        assert_eq!(count_in(&times, 0.0, 1.0), 100);
        assert_eq!(count_in(&times, 1.0, 2.0), 100);
        assert_eq!(count_in(&times, 2.0, 3.0), 1000);
        assert_eq!(count_in(&times, 3.0, 4.0), 1000);
        assert_eq!(times[200], 2_000_000_000);
        assert_eq!(times[201], 2_001_000_000);
        assert_eq!(shape.rate_at(1.999), 100.0);
        assert_eq!(shape.rate_at(2.0), 1000.0);
    }

    #[test]
    fn step_at_fractional_boundary() {
        // 2.5 events before the step: the integral reaches 3 at 2.5 s + 0.5 / 10 s.
        let shape = LoadShape::Step {
            from: 1.0,
            to: 10.0,
            at_s: 2.5,
        };
        let times: Vec<u64> = shape.schedule(0).take(5).collect();
        assert_eq!(
            times,
            vec![
                0,
                1_000_000_000,
                2_000_000_000,
                2_550_000_000,
                2_650_000_000
            ]
        );
    }

    #[test]
    fn sine_mean_over_a_period() {
        let shape = LoadShape::Sine {
            mean: 1000.0,
            amplitude: 800.0,
            period_s: 10.0,
        };
        let times = until(&shape, 20.0);
        for period in 0..2 {
            let start = f64::from(period) * 10.0;
            let n = count_in(&times, start, start + 10.0) as f64;
            assert!((n - 10_000.0).abs() <= 100.0, "period {period}: {n} events");
        }
        // The rising quarter carries more than the falling half's trough.
        let peak = count_in(&times, 2.0, 3.0) as f64; // around rate 1800
        let trough = count_in(&times, 7.0, 8.0) as f64; // around rate 200
        let expected = |a: f64, b: f64| {
            let omega = TAU / 10.0;
            1000.0 * (b - a) + 800.0 / omega * ((omega * a).cos() - (omega * b).cos())
        };
        assert!((peak - expected(2.0, 3.0)).abs() <= 1.0, "peak {peak}");
        assert!(
            (trough - expected(7.0, 8.0)).abs() <= 1.0,
            "trough {trough}"
        );
    }

    #[test]
    fn sine_times_invert_the_integral() {
        let (mean, amplitude, period_s) = (500.0, 450.0, 3.0);
        let shape = LoadShape::Sine {
            mean,
            amplitude,
            period_s,
        };
        let omega = TAU / period_s;
        for (i, t) in shape.schedule(0).take(5000).enumerate() {
            let t = t as f64 / NS_PER_S;
            let integral = mean * t + amplitude / omega * (1.0 - (omega * t).cos());
            // Within a rounding of one nanosecond at the peak rate.
            assert!((integral - i as f64).abs() < 1e-5, "event {i}: {integral}");
        }
    }

    #[test]
    fn bursts_count() {
        let shape = LoadShape::Bursts {
            base: 100.0,
            burst: 1000.0,
            every_s: 5.0,
            length_s: 1.0,
        };
        let times = until(&shape, 16.0);
        assert_eq!(count_in(&times, 0.0, 5.0), 500);
        assert_eq!(count_in(&times, 5.0, 6.0), 1000);
        assert_eq!(count_in(&times, 6.0, 10.0), 400);
        assert_eq!(count_in(&times, 10.0, 11.0), 1000);
        assert_eq!(count_in(&times, 11.0, 15.0), 400);
        assert_eq!(count_in(&times, 15.0, 16.0), 1000);
        assert_eq!(times.len(), 500 + 2 * 1400 + 1000);
        assert_eq!(shape.rate_at(4.9), 100.0);
        assert_eq!(shape.rate_at(5.5), 1000.0);
        assert_eq!(shape.rate_at(6.5), 100.0);
    }

    #[test]
    fn poisson_mean_and_determinism() {
        let shape = LoadShape::Poisson { rate: 1000.0 };
        let times: Vec<u64> = shape.schedule(42).take(100_001).collect();
        assert_eq!(times[0], 0);
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let mean_gap = times[100_000] as f64 / 100_000.0;
        assert!(
            (mean_gap - 1_000_000.0).abs() <= 30_000.0,
            "mean inter-arrival {mean_gap} ns"
        );
        let again: Vec<u64> = shape.schedule(42).take(100_001).collect();
        assert_eq!(times, again);
        let other: Vec<u64> = shape.schedule(43).take(100).collect();
        assert_ne!(times[..100], other[..]);
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        let bad = [
            (LoadShape::Constant { rate: 0.0 }, "rate"),
            (LoadShape::Constant { rate: f64::NAN }, "rate"),
            (LoadShape::Poisson { rate: -1.0 }, "rate"),
            (
                LoadShape::Step {
                    from: 1.0,
                    to: f64::INFINITY,
                    at_s: 1.0,
                },
                "to",
            ),
            (
                LoadShape::Step {
                    from: 1.0,
                    to: 1.0,
                    at_s: -1.0,
                },
                "at_s",
            ),
            (
                LoadShape::Sine {
                    mean: 10.0,
                    amplitude: 10.0,
                    period_s: 1.0,
                },
                "amplitude must be less than mean",
            ),
            (
                LoadShape::Sine {
                    mean: 10.0,
                    amplitude: 1.0,
                    period_s: 0.0,
                },
                "period_s",
            ),
            (
                LoadShape::Bursts {
                    base: 1.0,
                    burst: 2.0,
                    every_s: 1.0,
                    length_s: 1.0,
                },
                "length_s must be less than every_s",
            ),
        ];
        for (shape, needle) in bad {
            let err = shape.validate().unwrap_err();
            assert!(err.contains(needle), "{shape:?}: {err}");
            assert!(err.starts_with(&format!("load shape `{}`", shape.name())));
        }
        LoadShape::Sine {
            mean: 10.0,
            amplitude: 0.0,
            period_s: 1.0,
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn validate_bounds_rates_and_times() {
        let bad = [
            (
                LoadShape::Constant { rate: 1e-300 },
                "rate must be from 0.001 to 1e9 events per second, found 1e-300",
            ),
            (LoadShape::Poisson { rate: 1e12 }, "rate must be from"),
            (
                LoadShape::Step {
                    from: 1.0,
                    to: 1.0,
                    at_s: 1e300,
                },
                "at_s must be at most",
            ),
            (
                LoadShape::Sine {
                    mean: 1.0,
                    amplitude: 0.999_999_9,
                    period_s: 1.0,
                },
                "mean - amplitude",
            ),
            (
                LoadShape::Bursts {
                    base: 1.0,
                    burst: 1e-9,
                    every_s: 2.0,
                    length_s: 1.0,
                },
                "burst must be from",
            ),
        ];
        for (shape, needle) in bad {
            let err = shape.validate().unwrap_err();
            assert!(err.contains(needle), "{shape:?}: {err}");
        }
        LoadShape::Constant { rate: MIN_RATE }.validate().unwrap();
        LoadShape::Constant { rate: MAX_RATE }.validate().unwrap();
    }

    #[test]
    #[should_panic(expected = "invalid shape")]
    fn schedule_of_invalid_shape_panics() {
        let _ = LoadShape::Constant { rate: 0.0 }.schedule(0);
    }

    #[test]
    fn deserializes_from_tagged_json() {
        let shape: LoadShape =
            serde_json::from_str(r#"{"shape": "step", "from": 10, "to": 20.5, "at_s": 3}"#)
                .unwrap();
        assert_eq!(
            shape,
            LoadShape::Step {
                from: 10.0,
                to: 20.5,
                at_s: 3.0
            }
        );
        let shape: LoadShape = serde_json::from_str(r#"{"shape": "poisson", "rate": 5}"#).unwrap();
        assert_eq!(shape, LoadShape::Poisson { rate: 5.0 });
        assert!(
            serde_json::from_str::<LoadShape>(r#"{"shape": "constant", "rate": 1, "x": 2}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<LoadShape>(r#"{"shape": "square", "rate": 1}"#).is_err());
    }
}
