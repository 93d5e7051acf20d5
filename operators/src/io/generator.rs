//! The synthetic keyed record and its deterministic generator.
//!
//! A [`Generator`] pairs the [`Schedule`] of a [`LoadShape`] with a [`KeySampler`]: each
//! item is an intended send time (nanoseconds since the start of the run) and a
//! [`KeyedRecord`] whose event time follows the load shape
//! (`base_time_ms + intended_ns / 1_000_000`). The same [`GeneratorSpec`] gives the same
//! items in every run: the schedule, the keys and the values draw from three independent
//! streams derived from the one seed.

use super::keys::{KeyDist, KeySampler};
use super::shape::{LoadShape, Schedule};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Values of generated records lie in `0..VALUE_RANGE`.
pub const VALUE_RANGE: u64 = 1000;

/// A record with a key, a value and an event time: what the synthetic sources generate
/// and what the file and TCP sources read (as `key,value,time` CSV or
/// `{"key":..,"value":..,"time":..}` JSON, unknown fields rejected).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct KeyedRecord {
    /// The key.
    pub key: u64,
    /// The value.
    pub value: u64,
    /// Event time, milliseconds.
    pub time: u64,
}

/// What a [`Generator`] generates: how fast, which keys, how many, from which seed, and
/// the event time of the first record.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSpec {
    /// When records are due.
    pub shape: LoadShape,
    /// Which keys they carry.
    pub keys: KeyDist,
    /// How many records; `None` for an unbounded stream.
    pub events: Option<u64>,
    /// The seed of every random choice.
    pub seed: u64,
    /// Event time of a record due at the start of the run, milliseconds.
    pub base_time_ms: u64,
}

impl GeneratorSpec {
    /// Checks the load shape and the key distribution.
    pub fn validate(&self) -> Result<(), String> {
        self.shape.validate()?;
        self.keys.validate()
    }

    /// The pacing under which a source sends each record at the intended time this spec
    /// gives it (the event times follow the same schedule).
    pub fn pacing(&self) -> crate::source::Pacing {
        crate::source::Pacing::Shape {
            shape: self.shape.clone(),
            seed: mix(self.seed, 1),
        }
    }

    /// The generator of this spec's records.
    ///
    /// # Panics
    ///
    /// If the spec is invalid (see [`GeneratorSpec::validate`]).
    pub fn generator(&self) -> Generator {
        Generator::new(self)
    }
}

/// SplitMix64: derives independent seeds from one seed.
fn mix(seed: u64, stream: u64) -> u64 {
    let mut z = seed.wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generates `(intended send time in ns since the start, record)` pairs of a
/// [`GeneratorSpec`], in order of send time; ends after `events` records, if bounded.
#[derive(Clone, Debug)]
pub struct Generator {
    /// Intended send times.
    schedule: Schedule,
    /// Keys.
    keys: KeySampler,
    /// Values.
    values: SmallRng,
    /// Event time at the start, milliseconds.
    base_time_ms: u64,
    /// Records left to generate; `None` when unbounded.
    remaining: Option<u64>,
}

impl Generator {
    /// The generator of `spec`'s records.
    ///
    /// # Panics
    ///
    /// If the spec is invalid (see [`GeneratorSpec::validate`]).
    pub fn new(spec: &GeneratorSpec) -> Self {
        if let Err(e) = spec.validate() {
            panic!("Generator::new on an invalid spec: {e}");
        }
        Generator {
            schedule: spec.shape.schedule(mix(spec.seed, 1)),
            keys: spec.keys.sampler(mix(spec.seed, 2)),
            values: SmallRng::seed_from_u64(mix(spec.seed, 3)),
            base_time_ms: spec.base_time_ms,
            remaining: spec.events,
        }
    }

    /// Records left to generate; `None` when unbounded.
    pub fn remaining(&self) -> Option<u64> {
        self.remaining
    }
}

impl Iterator for Generator {
    type Item = (u64, KeyedRecord);

    fn next(&mut self) -> Option<(u64, KeyedRecord)> {
        if let Some(remaining) = &mut self.remaining {
            if *remaining == 0 {
                return None;
            }
            *remaining -= 1;
        }
        let due_ns = self.schedule.next()?;
        let record = KeyedRecord {
            key: self.keys.next_key(),
            value: self.values.gen_range(0..VALUE_RANGE),
            time: self.base_time_ms.saturating_add(due_ns / 1_000_000),
        };
        Some((due_ns, record))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self.remaining {
            Some(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                (n, Some(n))
            }
            None => (usize::MAX, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: Option<u64>, seed: u64) -> GeneratorSpec {
        GeneratorSpec {
            shape: LoadShape::Constant { rate: 500.0 },
            keys: KeyDist::Zipf {
                keys: 50,
                exponent: 1.0,
            },
            events,
            seed,
            base_time_ms: 1_000_000,
        }
    }

    #[test]
    fn deterministic_from_seed() {
        let a: Vec<_> = spec(Some(1000), 1).generator().collect();
        let b: Vec<_> = spec(Some(1000), 1).generator().collect();
        let c: Vec<_> = spec(Some(1000), 2).generator().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // Keys and values are not the same stream.
        assert!(a.iter().any(|(_, r)| r.key != r.value));
    }

    #[test]
    fn events_bound_the_stream() {
        let generator = spec(Some(123), 1).generator();
        assert_eq!(generator.size_hint(), (123, Some(123)));
        assert_eq!(generator.count(), 123);
        assert_eq!(spec(Some(0), 1).generator().next(), None);
        let unbounded = spec(None, 1).generator();
        assert_eq!(unbounded.remaining(), None);
        assert_eq!(unbounded.take(10_000).count(), 10_000);
    }

    #[test]
    fn records_follow_the_schedule() {
        let items: Vec<_> = spec(Some(2000), 9).generator().collect();
        for (i, (due_ns, record)) in items.iter().enumerate() {
            // 500 events/s: one every 2 ms.
            assert_eq!(*due_ns, i as u64 * 2_000_000);
            assert_eq!(record.time, 1_000_000 + i as u64 * 2);
            assert!(record.key < 50);
            assert!(record.value < VALUE_RANGE);
        }
        let values: std::collections::HashSet<u64> = items.iter().map(|(_, r)| r.value).collect();
        assert!(values.len() > 500, "values should vary: {}", values.len());
    }

    #[test]
    fn spec_from_json() {
        let spec: GeneratorSpec = serde_json::from_str(
            r#"{"shape": {"shape": "constant", "rate": 10},
                "keys": {"dist": "uniform", "keys": 4},
                "seed": 3, "base_time_ms": 0}"#,
        )
        .unwrap();
        assert_eq!(spec.events, None);
        assert_eq!(spec.keys, KeyDist::Uniform { keys: 4 });
        let err = GeneratorSpec {
            keys: KeyDist::Uniform { keys: 0 },
            ..spec
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("keys"), "{err}");
    }

    #[test]
    fn record_round_trips_through_rkyv() {
        let record = KeyedRecord {
            key: 1,
            value: 2,
            time: 3,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&record).unwrap();
        let back = rkyv::from_bytes::<KeyedRecord, rkyv::rancor::Error>(&bytes).unwrap();
        assert_eq!(back, record);
    }
}
