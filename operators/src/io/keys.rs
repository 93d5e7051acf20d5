//! Key distributions for synthetic sources: which key each generated record carries.
//!
//! A [`KeyDist`] is read from configuration as internally tagged JSON (or TOML), e.g.
//! `{"dist": "zipf", "keys": 100000, "exponent": 1.1}`, and gives a [`KeySampler`] that
//! draws keys in `0..keys`, the same sequence for the same seed. Under
//! [`KeyDist::Zipf`] key 0 is the most frequent, key 1 the next, and so on.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// How keys are spread over a key space of `keys` keys, `0..keys`.
#[derive(Clone, Debug, PartialEq, serde::Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyDist {
    /// Every key equally likely.
    Uniform {
        /// The number of distinct keys; at least 1.
        keys: u64,
    },
    /// Key `k` drawn with probability proportional to `1 / (k + 1)^exponent`.
    Zipf {
        /// The number of distinct keys; at least 1.
        keys: u64,
        /// The skew: 0 is uniform, around 1 is the classic Zipf law, larger is more
        /// skewed. Finite and at least 0.
        exponent: f64,
    },
}

impl KeyDist {
    /// Checks the parameters: `keys` at least 1, and a Zipf `exponent` finite and at
    /// least 0. The error names the distribution and the offending parameter.
    pub fn validate(&self) -> Result<(), String> {
        let (name, keys) = match *self {
            KeyDist::Uniform { keys } => ("uniform", keys),
            KeyDist::Zipf { keys, .. } => ("zipf", keys),
        };
        if keys == 0 {
            return Err(format!(
                "key distribution `{name}`: keys must be at least 1, found 0"
            ));
        }
        if let KeyDist::Zipf { exponent, .. } = *self {
            if !(exponent.is_finite() && exponent >= 0.0) {
                return Err(format!(
                    "key distribution `zipf`: exponent must be a finite number of at least 0, \
                     found {exponent}"
                ));
            }
        }
        Ok(())
    }

    /// The number of distinct keys.
    pub fn keys(&self) -> u64 {
        match *self {
            KeyDist::Uniform { keys } | KeyDist::Zipf { keys, .. } => keys,
        }
    }

    /// A sampler of keys in `0..keys`, deterministic from `seed`.
    ///
    /// # Panics
    ///
    /// If the distribution is invalid (see [`KeyDist::validate`]); validate configuration
    /// first.
    pub fn sampler(&self, seed: u64) -> KeySampler {
        if let Err(e) = self.validate() {
            panic!("KeyDist::sampler on an invalid distribution: {e}");
        }
        let dist = match *self {
            KeyDist::Uniform { keys } => Dist::Uniform(keys),
            KeyDist::Zipf { keys, exponent } => Dist::Zipf(
                keys,
                // `validate` checked both parameters.
                Zipf::new(keys, exponent).expect("validated Zipf parameters"),
            ),
        };
        KeySampler {
            rng: SmallRng::seed_from_u64(seed),
            dist,
        }
    }
}

/// Draws keys from a [`KeyDist`]; made by [`KeyDist::sampler`].
#[derive(Clone, Debug)]
pub struct KeySampler {
    /// The seeded generator.
    rng: SmallRng,
    /// What to draw.
    dist: Dist,
}

/// A [`KeySampler`]'s distribution.
#[derive(Clone, Debug)]
enum Dist {
    /// Uniform over `0..keys`.
    Uniform(u64),
    /// Zipf over `0..keys`: `rand_distr`'s, which draws `1..=keys` as floats.
    Zipf(u64, Zipf<f64>),
}

impl KeySampler {
    /// The next key, in `0..keys`.
    pub fn next_key(&mut self) -> u64 {
        match &self.dist {
            Dist::Uniform(keys) => self.rng.gen_range(0..*keys),
            Dist::Zipf(keys, zipf) => {
                // Rounding of huge key spaces could step past `keys`; `as` saturates.
                let rank = zipf.sample(&mut self.rng) as u64;
                rank.clamp(1, *keys) - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How often each of `keys` keys is drawn in `draws` draws.
    fn histogram(dist: &KeyDist, seed: u64, draws: usize) -> Vec<u64> {
        let mut counts = vec![0u64; dist.keys() as usize];
        let mut sampler = dist.sampler(seed);
        for _ in 0..draws {
            counts[sampler.next_key() as usize] += 1;
        }
        counts
    }

    #[test]
    fn keys_stay_in_range() {
        for dist in [
            KeyDist::Uniform { keys: 7 },
            KeyDist::Zipf {
                keys: 7,
                exponent: 1.2,
            },
            KeyDist::Zipf {
                keys: 7,
                exponent: 0.0,
            },
            KeyDist::Uniform { keys: 1 },
            KeyDist::Zipf {
                keys: 1,
                exponent: 1.0,
            },
        ] {
            let counts = histogram(&dist, 3, 20_000);
            assert_eq!(counts.iter().sum::<u64>(), 20_000);
            if dist.keys() > 1 {
                assert!(counts.iter().all(|&c| c > 0), "{dist:?}: {counts:?}");
            }
        }
        let mut huge = KeyDist::Zipf {
            keys: u64::MAX,
            exponent: 0.5,
        }
        .sampler(1);
        for _ in 0..1000 {
            let _ = huge.next_key();
        }
    }

    #[test]
    fn deterministic_from_seed() {
        for dist in [
            KeyDist::Uniform { keys: 1000 },
            KeyDist::Zipf {
                keys: 1000,
                exponent: 1.0,
            },
        ] {
            let draw = |seed| {
                let mut s = dist.sampler(seed);
                (0..1000).map(|_| s.next_key()).collect::<Vec<_>>()
            };
            assert_eq!(draw(5), draw(5));
            assert_ne!(draw(5), draw(6));
        }
    }

    #[test]
    fn uniform_is_even() {
        let counts = histogram(&KeyDist::Uniform { keys: 10 }, 9, 100_000);
        for c in counts {
            assert!((9_000..=11_000).contains(&c), "{c}");
        }
    }

    #[test]
    fn zipf_is_skewed() {
        let dist = KeyDist::Zipf {
            keys: 100,
            exponent: 1.0,
        };
        let counts = histogram(&dist, 11, 100_000);
        let top = counts[0];
        assert_eq!(
            counts.iter().max(),
            Some(&top),
            "key 0 is the most frequent"
        );
        // Uniform would give each key 1%; Zipf(1) over 100 keys gives key 0 about 19%.
        assert!(top > 15_000, "key 0 drawn {top} times");
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
    }

    #[test]
    fn validate_rejects_bad_parameters() {
        let err = KeyDist::Uniform { keys: 0 }.validate().unwrap_err();
        assert!(err.contains("keys must be at least 1"), "{err}");
        for exponent in [-0.5, f64::NAN, f64::INFINITY] {
            let err = KeyDist::Zipf { keys: 3, exponent }.validate().unwrap_err();
            assert!(err.contains("exponent"), "{err}");
        }
    }

    #[test]
    fn deserializes_from_tagged_json() {
        let dist: KeyDist =
            serde_json::from_str(r#"{"dist": "zipf", "keys": 10, "exponent": 1.5}"#).unwrap();
        assert_eq!(
            dist,
            KeyDist::Zipf {
                keys: 10,
                exponent: 1.5
            }
        );
        assert!(serde_json::from_str::<KeyDist>(
            r#"{"dist": "uniform", "keys": 10, "exponent": 1}"#
        )
        .is_err());
    }
}
