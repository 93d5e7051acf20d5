//! The types of typed rows' fields ([`Type`]) and their values ([`Value`]), with SQL's
//! NULL as a value of every type.
//!
//! Values are compared two ways. As data (keys of keyed state, `min`/`max`, `DISTINCT`),
//! [`Value`]'s `Eq`, `Ord` and `Hash` are a total order: by type, then by value, with
//! `-0.0` equal to `0.0` and every NaN equal to every other and above every number. In
//! expressions, numbers of different types compare by value (see the expression
//! module); both orders agree on values of one type.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// The type of a field or of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` or `false`.
    Bool,
    /// A signed 64-bit integer.
    I64,
    /// An unsigned 64-bit integer.
    U64,
    /// A 64-bit float.
    F64,
    /// UTF-8 text.
    String,
    /// Milliseconds since 1970-01-01T00:00:00Z (signed).
    Timestamp,
    /// The type of the literal `NULL` alone: it fits any other.
    Null,
}

impl Type {
    /// The type a schema names: `bool`, `i64`, `u64`, `f64`, `string`, `timestamp` or
    /// `timestamp_ms` (the same: milliseconds).
    ///
    /// ```
    /// use dirigo_operators::typed::Type;
    /// assert_eq!(Type::from_name("timestamp_ms"), Some(Type::Timestamp));
    /// assert_eq!(Type::from_name("decimal"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "bool" => Self::Bool,
            "i64" => Self::I64,
            "u64" => Self::U64,
            "f64" => Self::F64,
            "string" => Self::String,
            "timestamp" | "timestamp_ms" => Self::Timestamp,
            _ => return None,
        })
    }

    /// The names [`from_name`](Self::from_name) takes, for messages.
    pub const NAMES: &'static str = "bool, i64, u64, f64, string, timestamp_ms";

    /// Whether values of the type are numbers (integers or floats).
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::I64 | Self::U64 | Self::F64)
    }

    /// Whether the type is `i64` or `u64`.
    pub fn is_integer(self) -> bool {
        matches!(self, Self::I64 | Self::U64)
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bool => "bool",
            Self::I64 => "i64",
            Self::U64 => "u64",
            Self::F64 => "f64",
            Self::String => "string",
            Self::Timestamp => "timestamp_ms",
            Self::Null => "null",
        })
    }
}

/// One field's value in a typed row.
#[derive(Clone, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Value {
    /// SQL's NULL: unknown.
    #[default]
    Null,
    /// A `bool`.
    Bool(bool),
    /// An `i64`.
    I64(i64),
    /// A `u64`.
    U64(u64),
    /// An `f64`.
    F64(f64),
    /// A `string`.
    Str(String),
    /// A `timestamp_ms`.
    Timestamp(i64),
}

/// A typed row: one value per field of its schema, in the schema's order.
pub type Row = Vec<Value>;

impl Value {
    /// Whether the value is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Self::Null)
    }

    /// The value's type (`Null` for NULL).
    pub fn type_of(&self) -> Type {
        match self {
            Self::Null => Type::Null,
            Self::Bool(_) => Type::Bool,
            Self::I64(_) => Type::I64,
            Self::U64(_) => Type::U64,
            Self::F64(_) => Type::F64,
            Self::Str(_) => Type::String,
            Self::Timestamp(_) => Type::Timestamp,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Self::Null => 0,
            Self::Bool(_) => 1,
            Self::I64(_) => 2,
            Self::U64(_) => 3,
            Self::F64(_) => 4,
            Self::Str(_) => 5,
            Self::Timestamp(_) => 6,
        }
    }
}

/// `x` with `-0.0` made `0.0` and every NaN the same NaN: the form floats are compared
/// and hashed in as data.
pub(crate) fn canonical(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x == 0.0 {
        0.0
    } else {
        x
    }
}

impl PartialEq for Value {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        // Integers (keys, mostly) without the total order's dispatch.
        match (self, other) {
            (Self::U64(a), Self::U64(b)) => a == b,
            (Self::I64(a), Self::I64(b)) | (Self::Timestamp(a), Self::Timestamp(b)) => a == b,
            _ => self.cmp(other) == Ordering::Equal,
        }
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.cmp(b),
            (Self::I64(a), Self::I64(b)) | (Self::Timestamp(a), Self::Timestamp(b)) => a.cmp(b),
            (Self::U64(a), Self::U64(b)) => a.cmp(b),
            (Self::F64(a), Self::F64(b)) => canonical(*a).total_cmp(&canonical(*b)),
            (Self::Str(a), Self::Str(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Value {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Self::Null => {}
            Self::Bool(b) => b.hash(state),
            Self::I64(i) | Self::Timestamp(i) => i.hash(state),
            Self::U64(u) => u.hash(state),
            Self::F64(x) => canonical(*x).to_bits().hash(state),
            Self::Str(s) => s.hash(state),
        }
    }
}

impl fmt::Display for Value {
    /// The value as text: what `CAST(x AS string)` and `concat` give, and what a CSV
    /// sink writes (NULL is the empty string).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => Ok(()),
            Self::Bool(b) => write!(f, "{b}"),
            Self::I64(i) | Self::Timestamp(i) => write!(f, "{i}"),
            Self::U64(u) => write!(f, "{u}"),
            Self::F64(x) => write!(f, "{x}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

impl serde::Serialize for Value {
    /// JSON: NULL is `null`, a timestamp its milliseconds, a non-finite float `null`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_none(),
            Self::Bool(b) => serializer.serialize_bool(*b),
            Self::I64(i) | Self::Timestamp(i) => serializer.serialize_i64(*i),
            Self::U64(u) => serializer.serialize_u64(*u),
            Self::F64(x) if x.is_finite() => serializer.serialize_f64(*x),
            Self::F64(_) => serializer.serialize_none(),
            Self::Str(s) => serializer.serialize_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_order_is_total_and_agrees_with_hashing() {
        use std::collections::hash_map::DefaultHasher;
        let hash = |v: &Value| {
            let mut h = DefaultHasher::new();
            v.hash(&mut h);
            h.finish()
        };
        assert_eq!(Value::F64(-0.0), Value::F64(0.0));
        assert_eq!(hash(&Value::F64(-0.0)), hash(&Value::F64(0.0)));
        assert_eq!(Value::F64(f64::NAN), Value::F64(-f64::NAN));
        assert!(Value::F64(f64::NAN) > Value::F64(f64::INFINITY));
        assert!(Value::Null < Value::Bool(false));
        assert!(Value::Str("a".into()) < Value::Str("b".into()));
        let json = serde_json::to_string(&vec![
            Value::Null,
            Value::F64(1.5),
            Value::F64(f64::NAN),
            Value::Timestamp(7),
            Value::Str("x".into()),
        ])
        .unwrap();
        assert_eq!(json, r#"[null,1.5,null,7,"x"]"#);
    }
}
