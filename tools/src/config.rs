//! The TOML configuration: what `dirigo validate` checks and what the runtime is built
//! from. Every key, its type, default and an example are in `configs/README.md`.
//!
//! Errors point at the offending spot as `FILE:LINE:COLUMN: what was expected`, and the
//! command exits with code 2; no input makes the loader panic (a proptest mutates valid
//! files to check that).
//!
//! Sections so far: `[runtime]` and `[scheduler]`. Applications (`[[app]]`) come with
//! the operator library; until then a file that declares one is refused with that reason.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dirigo_runtime::scheduling::{Dirigo, Edf, Fifo, RoundRobin};
use dirigo_runtime::RuntimeBuilder;
use serde::Deserialize;
use toml::Spanned;

/// A configuration file, parsed and checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Shards, placement and the shard loop's settings.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// The scheduling policy and its parameters.
    #[serde(default)]
    pub scheduler: SchedulerSection,
    /// Applications: not supported yet (kept to give a clear error).
    #[serde(default)]
    app: Option<Spanned<toml::Value>>,
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// How many shards (one per CPU by default).
    pub shards: Option<Spanned<usize>>,
    /// The CPUs to pin shards to, one shard each (instead of `shards`).
    pub cpus: Option<Spanned<Vec<Spanned<usize>>>>,
    /// Messages per shard-to-shard ring.
    pub ring_capacity: Option<Spanned<usize>>,
    /// How long an idle shard polls before it parks, in microseconds.
    pub spin_budget_us: Option<u64>,
    /// The longest park, in milliseconds.
    pub park_timeout_ms: Option<Spanned<u64>>,
    /// Deactivate actors idle this long, in seconds (0: never).
    pub idle_deactivation_s: Option<u64>,
    /// Messages from outside threads that may wait per shard.
    pub intake_capacity: Option<Spanned<usize>>,
    /// Warn about handlers that hold a shard longer than this, in milliseconds.
    pub handler_warning_ms: Option<u64>,
}

/// `[scheduler]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerSection {
    /// Which policy orders the shards' ready work.
    #[serde(default)]
    pub policy: PolicyName,
    /// `dirigo`: ask for a lessee once slack falls below this share of the SLO.
    pub headroom: Option<Spanned<f64>>,
    /// `dirigo`: retire a lessee idle this long, in milliseconds.
    pub retire_after_ms: Option<u64>,
    /// `dirigo`: the most lessees one actor gets.
    pub max_lessees: Option<usize>,
    /// `dirigo`: drop messages that cannot meet their deadline anywhere.
    pub shed: Option<bool>,
}

/// The built-in policies, by name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// Ready actors take turns (the default).
    #[default]
    RoundRobin,
    /// Oldest event first.
    Fifo,
    /// Earliest deadline first.
    Edf,
    /// Deadlines, laxity admission and automatic lessees.
    Dirigo,
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RoundRobin => "round-robin",
            Self::Fifo => "fifo",
            Self::Edf => "edf",
            Self::Dirigo => "dirigo",
        })
    }
}

/// Why a configuration was refused: where, and what was expected.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place.
    pub position: Option<(usize, usize)>,
    /// What was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(
                f,
                "{}:{line}:{column}: {}",
                self.path.display(),
                self.message
            ),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// 1-based line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

impl Config {
    /// Reads and checks the configuration at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            path: path.to_owned(),
            position: None,
            message: format!("cannot read the file: {error}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let error_at = |span: Option<Range<usize>>, message: String| ConfigError {
            path: path.to_owned(),
            position: span.map(|span| position(text, span.start)),
            message,
        };
        let config: Config = toml::from_str(text).map_err(|error| {
            let message = error.message().trim().replace('\n', " ");
            error_at(error.span(), message)
        })?;
        config
            .check(&available_cpus())
            .map_err(|(span, message)| error_at(Some(span), message))?;
        Ok(config)
    }

    /// The checks TOML types cannot express; the span of the offending value.
    fn check(&self, available: &[usize]) -> Result<(), (Range<usize>, String)> {
        if let Some(app) = &self.app {
            return Err((
                app.span(),
                "applications ([[app]]) are not supported by this version yet; remove the section"
                    .into(),
            ));
        }
        let runtime = &self.runtime;
        if let (Some(shards), Some(_)) = (&runtime.shards, &runtime.cpus) {
            return Err((
                shards.span(),
                "either `shards` or `cpus`, not both: `cpus` already says how many shards".into(),
            ));
        }
        if let Some(shards) = &runtime.shards {
            if *shards.get_ref() == 0 {
                return Err((shards.span(), "at least 1 shard".into()));
            }
        }
        if let Some(cpus) = &runtime.cpus {
            if cpus.get_ref().is_empty() {
                return Err((cpus.span(), "at least one CPU".into()));
            }
            for (index, cpu) in cpus.get_ref().iter().enumerate() {
                if cpus.get_ref()[..index]
                    .iter()
                    .any(|earlier| earlier.get_ref() == cpu.get_ref())
                {
                    return Err((cpu.span(), format!("CPU {} is listed twice", cpu.get_ref())));
                }
                if !available.contains(cpu.get_ref()) {
                    return Err((
                        cpu.span(),
                        format!(
                            "a CPU this process may run on ({available:?}); CPU {} is not one",
                            cpu.get_ref()
                        ),
                    ));
                }
            }
        }
        for (value, what) in [
            (&runtime.ring_capacity, "a ring capacity of at least 2"),
            (&runtime.intake_capacity, "an intake capacity of at least 1"),
        ] {
            if let Some(value) = value {
                let minimum = if what.contains("ring") { 2 } else { 1 };
                if *value.get_ref() < minimum {
                    return Err((value.span(), what.into()));
                }
            }
        }
        if let Some(timeout) = &runtime.park_timeout_ms {
            if *timeout.get_ref() == 0 {
                return Err((timeout.span(), "a park timeout of at least 1 ms".into()));
            }
        }
        if let Some(headroom) = &self.scheduler.headroom {
            if !(0.0..=1.0).contains(headroom.get_ref()) {
                return Err((
                    headroom.span(),
                    format!(
                        "a share of the SLO between 0 and 1, not {}",
                        headroom.get_ref()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies the settings to a runtime builder.
    pub fn apply<M: Send + 'static>(&self, mut builder: RuntimeBuilder<M>) -> RuntimeBuilder<M> {
        let runtime = &self.runtime;
        if let Some(shards) = &runtime.shards {
            builder = builder.shards(*shards.get_ref());
        }
        if let Some(cpus) = &runtime.cpus {
            builder = builder.cpus(
                cpus.get_ref()
                    .iter()
                    .map(|cpu| *cpu.get_ref())
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(capacity) = &runtime.ring_capacity {
            builder = builder.ring_capacity(*capacity.get_ref());
        }
        if let Some(budget) = runtime.spin_budget_us {
            builder = builder.spin_budget(Duration::from_micros(budget));
        }
        if let Some(timeout) = &runtime.park_timeout_ms {
            builder = builder.park_timeout(Duration::from_millis(*timeout.get_ref()));
        }
        if let Some(seconds) = runtime.idle_deactivation_s {
            builder =
                builder.idle_deactivation((seconds > 0).then(|| Duration::from_secs(seconds)));
        }
        if let Some(capacity) = &runtime.intake_capacity {
            builder = builder.intake_capacity(*capacity.get_ref());
        }
        if let Some(bound) = runtime.handler_warning_ms {
            builder = builder.handler_warning(Duration::from_millis(bound));
        }
        let scheduler = &self.scheduler;
        match scheduler.policy {
            PolicyName::RoundRobin => builder.policy(RoundRobin),
            PolicyName::Fifo => builder.policy(Fifo),
            PolicyName::Edf => builder.policy(Edf),
            PolicyName::Dirigo => {
                let defaults = Dirigo::default();
                builder.policy(Dirigo {
                    headroom: scheduler
                        .headroom
                        .as_ref()
                        .map_or(defaults.headroom, |headroom| *headroom.get_ref()),
                    retire_after: scheduler
                        .retire_after_ms
                        .map_or(defaults.retire_after, Duration::from_millis),
                    max_lessees: scheduler.max_lessees.unwrap_or(defaults.max_lessees),
                    shed: scheduler.shed.unwrap_or(defaults.shed),
                })
            }
        }
    }

    /// One line about what the file sets up.
    pub fn summary(&self) -> String {
        let shards = match (&self.runtime.shards, &self.runtime.cpus) {
            (Some(shards), _) => format!("{} shards", shards.get_ref()),
            (_, Some(cpus)) => format!(
                "{} shards on CPUs {:?}",
                cpus.get_ref().len(),
                cpus.get_ref()
                    .iter()
                    .map(|cpu| *cpu.get_ref())
                    .collect::<Vec<_>>()
            ),
            _ => "one shard per CPU".into(),
        };
        format!("{shards}, policy {}", self.scheduler.policy)
    }
}

fn available_cpus() -> Vec<usize> {
    dirigo_runtime::placement::available_cpus()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    #[test]
    fn a_full_file_parses() {
        let config = parse(
            "[runtime]\nshards = 2\nring_capacity = 512\nspin_budget_us = 50\n\n[scheduler]\npolicy = \"dirigo\"\nheadroom = 0.5\n",
        )
        .unwrap();
        assert_eq!(config.scheduler.policy, PolicyName::Dirigo);
        assert_eq!(config.summary(), "2 shards, policy dirigo");
        let _builder = config.apply(dirigo_runtime::Runtime::<u32>::builder());
    }

    #[test]
    fn errors_point_at_the_value() {
        let error = parse("[runtime]\nshards = \"two\"\n").unwrap_err();
        assert!(error.to_string().starts_with("test.toml:2:"), "{error}");
        let error = parse("[runtime]\nshard = 2\n").unwrap_err();
        assert!(error.to_string().starts_with("test.toml:2:1:"), "{error}");
        let error = parse("[runtime]\ncpus = [0, 0]\n").unwrap_err().to_string();
        assert!(
            error.starts_with("test.toml:2:12:") && error.contains("twice"),
            "{error}"
        );
        let error = parse("[runtime]\ncpus = [0, 4096]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("test.toml:2:12:") && error.contains("4096"),
            "{error}"
        );
        let error = parse("[scheduler]\npolicy = \"fastest\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.toml:2:"), "{error}");
        let error = parse("\n\n[scheduler]\nheadroom = 3.0\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("test.toml:4:12:"), "{error}");
        let error = parse("[runtime]\nshards = 0\n").unwrap_err().to_string();
        assert!(error.starts_with("test.toml:2:10:"), "{error}");
        let error = parse("[[app]]\nname = \"x\"\n").unwrap_err().to_string();
        assert!(error.contains("not supported"), "{error}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// No input makes the loader panic: valid files with bytes replaced, inserted or
        /// cut give a config or an error with a position inside the file.
        #[test]
        fn mutated_files_never_panic(
            position in 0usize..160,
            byte in any::<u8>(),
            mode in 0u8..3,
        ) {
            let valid = "[runtime]\nshards = 2\ncpus_unused = 1\nring_capacity = 1024\n\n[scheduler]\npolicy = \"edf\"\nheadroom = 0.75\n";
            let mut bytes = valid.as_bytes().to_vec();
            let at = position % bytes.len();
            match mode {
                0 => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ => bytes.truncate(at),
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Err(error) = parse(&text) {
                if let Some((line, _)) = error.position {
                    prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{}", error);
                }
            }
        }
    }
}
