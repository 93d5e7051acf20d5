//! An app's sources and what its operators read: `[app.source]` (one source, called
//! `source`), or `[[app.source]]`s (several, each with a `name`), and the [`Input`]s an
//! operator's `input` names.
//!
//! Several sources are for pipelines of typed rows (each source has a `schema`): an
//! operator reads one source or several by name, a union or a `join` of them. Their
//! watermarks are kept apart, so an operator reading several sources is as far as the
//! least of them.

use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{AppSection, SourceSection};

/// What one operator reads: one of the app's sources, or another operator (by their
/// positions in the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The app's source at this position.
    Source(usize),
    /// The app's operator at this position.
    Operator(usize),
}

impl Input {
    /// The operator read, if it is one.
    pub fn operator(self) -> Option<usize> {
        match self {
            Self::Operator(index) => Some(index),
            Self::Source(_) => None,
        }
    }
}

/// The name an input is read by when a single source has no `name`.
pub const DEFAULT_SOURCE_NAME: &str = "source";

impl AppSection {
    /// The app's first source (its only one unless it lists several).
    pub fn source(&self) -> Option<&Spanned<SourceSection>> {
        self.sources.first()
    }

    /// The name operators read source `index` by: its `name`, else `source`.
    pub fn source_name(&self, index: usize) -> &str {
        self.sources[index]
            .get_ref()
            .name
            .as_ref()
            .map_or(DEFAULT_SOURCE_NAME, |name| name.get_ref().as_str())
    }

    /// Every name an operator's `input` may give: the sources', then the operators'.
    pub fn input_names(&self) -> Vec<&str> {
        let sources = (0..self.sources.len().max(1)).map(|at| match self.sources.get(at) {
            Some(_) => self.source_name(at),
            None => DEFAULT_SOURCE_NAME,
        });
        sources
            .chain(self.operators.iter().map(|o| o.name.get_ref().as_str()))
            .collect()
    }

    /// What `name` in an operator's `input` refers to, if anything.
    pub fn input_named(&self, name: &str) -> Option<Input> {
        if let Some(index) = self.operators.iter().position(|o| o.name.get_ref() == name) {
            return Some(Input::Operator(index));
        }
        if let Some(index) = (0..self.sources.len()).find(|&at| self.source_name(at) == name) {
            return Some(Input::Source(index));
        }
        // An app without a source section reads the default source (a generator).
        (self.sources.is_empty() && name == DEFAULT_SOURCE_NAME).then_some(Input::Source(0))
    }

    /// What operator `index` reads: its `input`s, or by default the operator listed
    /// before it, or the (first) source for the first one.
    pub fn inputs_of(&self, index: usize) -> Vec<Input> {
        match &self.operators[index].input {
            Some(input) => input
                .get_ref()
                .names()
                .into_iter()
                .filter_map(|name| self.input_named(name))
                .collect(),
            None => vec![index
                .checked_sub(1)
                .map_or(Input::Source(0), Input::Operator)],
        }
    }
}

/// Deserializes `source` as one table (`[app.source]`) or an array of tables
/// (`[[app.source]]`), each with the span of its table.
pub(super) fn one_or_many<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Spanned<SourceSection>>, D::Error> {
    let spanned = Spanned::<OneOrMany>::deserialize(deserializer)?;
    let span = spanned.span();
    Ok(match spanned.into_inner() {
        OneOrMany::One(source) => vec![Spanned::new(span, *source)],
        OneOrMany::Many(sources) => sources,
    })
}

enum OneOrMany {
    One(Box<SourceSection>),
    Many(Vec<Spanned<SourceSection>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

struct OneOrManyVisitor;

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an `[app.source]` table, or `[[app.source]]` tables")
    }

    // Delegating keeps the source's own errors (unknown keys, wrong types) and spans.
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<OneOrMany, A::Error> {
        SourceSection::deserialize(MapAccessDeserializer::new(map))
            .map(|source| OneOrMany::One(Box::new(source)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<OneOrMany, A::Error> {
        Vec::deserialize(SeqAccessDeserializer::new(seq)).map(OneOrMany::Many)
    }
}
