//! Which CPU each shard runs on: pinned when the CPUs asked for are there, unpinned (with
//! a warning saying why) when they are not.

use std::collections::BTreeSet;

/// Which CPUs the shards should use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuSpec {
    /// This many shards, pinned to the first CPUs this process may run on.
    Shards(usize),
    /// One shard per listed CPU, in order.
    Cpus(Vec<usize>),
}

/// The outcome: a CPU per shard, or `None` everywhere when running unpinned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// `cpus[shard]`: the CPU the shard is pinned to.
    pub cpus: Vec<Option<usize>>,
    /// Why the shards run unpinned, when they do.
    pub unpinned_reason: Option<String>,
}

impl Placement {
    /// How many shards.
    pub fn shards(&self) -> usize {
        self.cpus.len()
    }

    /// Whether every shard is pinned.
    pub fn pinned(&self) -> bool {
        self.unpinned_reason.is_none()
    }
}

/// The CPUs this process may run on (its affinity mask), ascending.
pub fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|core| core.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

/// Decides the placement of `spec` given the `available` CPUs. Errors are mistakes in the
/// request itself (no shards, a CPU listed twice), not missing CPUs.
///
/// ```
/// use dirigo_runtime::placement::{decide, CpuSpec};
///
/// let pinned = decide(&CpuSpec::Shards(2), &[0, 1, 2, 3]).unwrap();
/// assert_eq!(pinned.cpus, [Some(0), Some(1)]);
///
/// let unpinned = decide(&CpuSpec::Shards(8), &[0, 1]).unwrap();
/// assert!(!unpinned.pinned());
/// assert!(unpinned.unpinned_reason.unwrap().contains("only 2 CPUs"));
/// ```
pub fn decide(spec: &CpuSpec, available: &[usize]) -> Result<Placement, String> {
    let unpinned = |shards: usize, reason: String| Placement {
        cpus: vec![None; shards],
        unpinned_reason: Some(reason),
    };
    match spec {
        CpuSpec::Shards(0) => Err("a runtime needs at least one shard".into()),
        CpuSpec::Shards(shards) => {
            if *shards <= available.len() {
                Ok(Placement {
                    cpus: available[..*shards].iter().copied().map(Some).collect(),
                    unpinned_reason: None,
                })
            } else {
                Ok(unpinned(
                    *shards,
                    format!(
                        "{shards} shards asked for but only {} CPUs are available",
                        available.len()
                    ),
                ))
            }
        }
        CpuSpec::Cpus(cpus) if cpus.is_empty() => Err("the CPU list is empty".into()),
        CpuSpec::Cpus(cpus) => {
            let mut seen = BTreeSet::new();
            if let Some(duplicate) = cpus.iter().find(|cpu| !seen.insert(**cpu)) {
                return Err(format!("CPU {duplicate} is listed twice"));
            }
            let missing: Vec<String> = cpus
                .iter()
                .filter(|cpu| !available.contains(cpu))
                .map(ToString::to_string)
                .collect();
            if missing.is_empty() {
                Ok(Placement {
                    cpus: cpus.iter().copied().map(Some).collect(),
                    unpinned_reason: None,
                })
            } else {
                Ok(unpinned(
                    cpus.len(),
                    format!(
                        "CPU(s) {} are not available to this process (available: {available:?})",
                        missing.join(", ")
                    ),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_when_the_cpus_are_there() {
        let placement = decide(&CpuSpec::Shards(2), &[0, 1, 2]).unwrap();
        assert_eq!(placement.cpus, [Some(0), Some(1)]);
        assert!(placement.pinned());
        let placement = decide(&CpuSpec::Cpus(vec![2, 0]), &[0, 1, 2]).unwrap();
        assert_eq!(placement.cpus, [Some(2), Some(0)]);
    }

    #[test]
    fn falls_back_to_unpinned_and_says_why() {
        let placement = decide(&CpuSpec::Shards(8), &[0, 1]).unwrap();
        assert_eq!(placement.cpus, vec![None; 8]);
        assert!(placement.unpinned_reason.unwrap().contains("8 shards"));
        let placement = decide(&CpuSpec::Cpus(vec![0, 7]), &[0, 1]).unwrap();
        assert!(placement.unpinned_reason.unwrap().contains("CPU(s) 7"));
    }

    #[test]
    fn refuses_impossible_requests() {
        assert!(decide(&CpuSpec::Shards(0), &[0]).is_err());
        assert!(decide(&CpuSpec::Cpus(vec![]), &[0]).is_err());
        assert!(decide(&CpuSpec::Cpus(vec![1, 1]), &[0, 1])
            .unwrap_err()
            .contains("twice"));
    }
}
