//! The value types of the typed-row keys: `schema` ([`SchemaConfig`]) and the ordered
//! tables of names to expressions, `fields` and `aggregates` ([`NamedExprs`]). Both keep
//! their entries in the order the file lists them, with each name's and value's place.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// `schema = { name = "type", … }`, or `schema = "infer"`.
#[derive(Debug)]
pub enum SchemaConfig {
    /// The fields and their type names, in order.
    Fields(Vec<(Spanned<String>, Spanned<String>)>),
    /// Taken from the file's CSV header or first JSON object.
    Infer,
}

/// An inline table of names to expressions, in the file's order.
#[derive(Debug, Default)]
pub struct NamedExprs(pub Vec<(Spanned<String>, Spanned<String>)>);

struct Entries(&'static str);

impl<'de> Visitor<'de> for Entries {
    type Value = Vec<(Spanned<String>, Spanned<String>)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(name) = map.next_key::<Spanned<String>>()? {
            let value: Spanned<String> = map.next_value()?;
            entries.push((name, value));
        }
        Ok(entries)
    }
}

impl<'de> Deserialize<'de> for NamedExprs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(Entries(
                "a table of names to expressions in strings, such as `{ total = \"sum(amount)\" }`",
            ))
            .map(NamedExprs)
    }
}

struct SchemaVisitor;

const SCHEMA_EXPECTED: &str =
    "a table of field names to types, such as `{ card = \"string\", ts = \"timestamp_ms\" }`, or \"infer\"";

impl<'de> Visitor<'de> for SchemaVisitor {
    type Value = SchemaConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEMA_EXPECTED)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        if value == "infer" {
            Ok(SchemaConfig::Infer)
        } else {
            Err(E::invalid_value(de::Unexpected::Str(value), &self))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Entries(SCHEMA_EXPECTED)
            .visit_map(map)
            .map(SchemaConfig::Fields)
    }
}

impl<'de> Deserialize<'de> for SchemaConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SchemaVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Both {
        schema: SchemaConfig,
        fields: NamedExprs,
    }

    #[test]
    fn entries_keep_their_order_and_places() {
        let text =
            "schema = { z = \"string\", a = \"f64\" }\nfields = { total = \"a * 2\", b = \"z\" }\n";
        let both: Both = toml::from_str(text).unwrap();
        let SchemaConfig::Fields(schema) = both.schema else {
            panic!("a table");
        };
        let names: Vec<&str> = schema.iter().map(|(n, _)| n.get_ref().as_str()).collect();
        assert_eq!(names, ["z", "a"]);
        assert_eq!(&text[schema[1].1.span()], "\"f64\"");
        assert_eq!(&text[schema[1].0.span()], "a");
        let names: Vec<&str> = both
            .fields
            .0
            .iter()
            .map(|(n, _)| n.get_ref().as_str())
            .collect();
        assert_eq!(names, ["total", "b"]);
        let infer: Both = toml::from_str("schema = \"infer\"\nfields = {}").unwrap();
        assert!(matches!(infer.schema, SchemaConfig::Infer));
        assert!(toml::from_str::<Both>("schema = \"guess\"\nfields = {}").is_err());
    }
}
