//! A stream's [`Schema`] (its fields' names and types, in order) and decoding one
//! record of a JSON-lines or CSV input into a typed [`Row`] of it.
//!
//! JSON: one object per line; a declared field that is missing or `null` is NULL, fields
//! that are not declared are ignored. CSV: fields separated by `,` (no quoting), in the
//! schema's order, or in the order of a header line naming the schema's fields; an empty
//! field is NULL. Numbers must fit their type exactly (`1.5` is not an `i64`, `-1` not a
//! `u64`); a timestamp is an integer of milliseconds since 1970. A value that does not
//! fit is the record's error, for its dead letter.

use std::sync::Arc;

use super::value::{Row, Type, Value};

/// One field of a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: Type,
}

/// The fields of a stream's rows, in order.
///
/// ```
/// use dirigo_operators::typed::{Schema, Type, Value};
///
/// let schema = Schema::new(vec![("card", Type::String), ("amount", Type::F64)]);
/// assert_eq!(schema.index_of("amount"), Some(1));
/// let row = schema.decode_json(r#"{"card":"c1","amount":12}"#).unwrap();
/// assert_eq!(row, vec![Value::Str("c1".into()), Value::F64(12.0)]);
/// assert!(schema.decode_json(r#"{"card":"c1","amount":"x"}"#).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schema {
    fields: Vec<Field>,
}

impl Schema {
    /// A schema of `(name, type)` fields, in order.
    pub fn new<S: Into<String>>(fields: impl IntoIterator<Item = (S, Type)>) -> Self {
        Self {
            fields: fields
                .into_iter()
                .map(|(name, ty)| Field {
                    name: name.into(),
                    ty,
                })
                .collect(),
        }
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The position of the field named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|field| field.name == name)
    }

    /// The names, joined by `, `, for messages.
    pub fn names(&self) -> String {
        self.fields
            .iter()
            .map(|field| field.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Decodes one JSON object into a row.
    ///
    /// # Errors
    /// When the line is not a JSON object, or a field's value does not fit its type.
    pub fn decode_json(&self, line: &str) -> Result<Row, String> {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
            .map_err(|e| format!("expected a JSON object with the schema's fields: {e}"))?;
        self.fields
            .iter()
            .map(|field| match object.get(&field.name) {
                None | Some(serde_json::Value::Null) => Ok(Value::Null),
                Some(value) => from_json(value, field.ty).ok_or_else(|| {
                    format!("field {}: expected {}, found {value}", field.name, field.ty)
                }),
            })
            .collect()
    }

    /// Decodes the fields of one CSV line into a row; `order[i]` is the position in
    /// `fields` of the schema's field `i`.
    ///
    /// # Errors
    /// When the line has another number of fields, or a value does not fit its type.
    pub fn decode_csv(&self, fields: &[&str], order: &[usize]) -> Result<Row, String> {
        if fields.len() != self.fields.len() {
            return Err(format!(
                "expected {} fields ({}), found {}",
                self.fields.len(),
                self.names(),
                fields.len()
            ));
        }
        self.fields
            .iter()
            .zip(order)
            .map(|(field, &at)| {
                let text = fields[at];
                if text.is_empty() {
                    return Ok(Value::Null);
                }
                from_text(text, field.ty).ok_or_else(|| {
                    format!(
                        "field {} ({}): expected {}, found {text:?}",
                        at + 1,
                        field.name,
                        field.ty
                    )
                })
            })
            .collect()
    }

    /// If `fields` (a CSV line's) name every field of the schema once, in some order: the
    /// position of each schema field among them (see [`decode_csv`](Self::decode_csv)).
    pub fn csv_header_order(&self, fields: &[&str]) -> Option<Vec<usize>> {
        if fields.len() != self.fields.len() {
            return None;
        }
        let order: Option<Vec<usize>> = self
            .fields
            .iter()
            .map(|field| fields.iter().position(|name| *name == field.name))
            .collect();
        let order = order?;
        let mut seen = order.clone();
        seen.sort_unstable();
        seen.dedup();
        (seen.len() == order.len()).then_some(order)
    }
}

/// A shared schema.
pub type SchemaRef = Arc<Schema>;

/// A JSON value as a value of type `ty`, if it is one.
fn from_json(value: &serde_json::Value, ty: Type) -> Option<Value> {
    use serde_json::Value as J;
    Some(match (ty, value) {
        (Type::Bool, J::Bool(b)) => Value::Bool(*b),
        (Type::I64, J::Number(n)) => Value::I64(n.as_i64()?),
        (Type::U64, J::Number(n)) => Value::U64(n.as_u64()?),
        (Type::Timestamp, J::Number(n)) => Value::Timestamp(n.as_i64()?),
        (Type::F64, J::Number(n)) => Value::F64(n.as_f64()?),
        (Type::String, J::String(s)) => Value::Str(s.clone()),
        _ => return None,
    })
}

/// Text (a CSV field) as a value of type `ty`, if it is one.
pub(crate) fn from_text(text: &str, ty: Type) -> Option<Value> {
    Some(match ty {
        Type::Bool => match text.to_ascii_lowercase().as_str() {
            "true" | "t" | "1" => Value::Bool(true),
            "false" | "f" | "0" => Value::Bool(false),
            _ => return None,
        },
        Type::I64 => Value::I64(text.parse().ok()?),
        Type::U64 => Value::U64(text.parse().ok()?),
        Type::Timestamp => Value::Timestamp(text.parse().ok()?),
        Type::F64 => Value::F64(text.parse().ok()?),
        Type::String => Value::Str(text.to_owned()),
        Type::Null => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_in_schema_or_header_order() {
        let schema = Schema::new(vec![
            ("a", Type::I64),
            ("b", Type::String),
            ("c", Type::Bool),
        ]);
        let order = schema.csv_header_order(&["c", "a", "b"]).unwrap();
        assert_eq!(order, vec![1, 2, 0]);
        assert_eq!(
            schema.decode_csv(&["true", "-4", ""], &order).unwrap(),
            vec![Value::I64(-4), Value::Null, Value::Bool(true)]
        );
        assert!(schema.csv_header_order(&["a", "a", "b"]).is_none());
        let error = schema.decode_csv(&["x", "s", "t"], &[0, 1, 2]).unwrap_err();
        assert_eq!(error, r#"field 1 (a): expected i64, found "x""#);
        assert!(schema
            .decode_csv(&["1"], &[0, 1, 2])
            .unwrap_err()
            .contains("expected 3 fields"));
    }

    #[test]
    fn json_types_are_exact() {
        let schema = Schema::new(vec![
            ("i", Type::I64),
            ("u", Type::U64),
            ("t", Type::Timestamp),
        ]);
        assert_eq!(
            schema.decode_json(r#"{"i":-1,"u":2,"extra":1}"#).unwrap(),
            vec![Value::I64(-1), Value::U64(2), Value::Null]
        );
        assert!(schema.decode_json(r#"{"i":1.5}"#).is_err());
        assert!(schema.decode_json(r#"{"u":-1}"#).is_err());
        assert!(schema.decode_json("[1]").is_err());
    }
}
