//! The keys of typed windows, tops and joins ([`RowKey`]): a key of one field is that
//! field's [`Value`] itself, and a key of several fields a [`Row`] of them. A one-field
//! key, the common case, is then cloned, hashed and compared without a vector of its own
//! (which keyed state would otherwise allocate, hash by length and free per record).

use super::value::{canonical, Row, Value};
use crate::state::Key;

/// What typed operators key their state by.
pub trait RowKey: Key + Sync {
    /// Whether a field of the key is NULL (in a join, such a key matches nothing).
    fn has_null(&self) -> bool;

    /// A new row that starts with the key's fields, with room for `more` after them.
    fn row_with_room(&self, more: usize) -> Row;
}

impl RowKey for Value {
    fn has_null(&self) -> bool {
        self.is_null()
    }

    fn row_with_room(&self, more: usize) -> Row {
        let mut row = Vec::with_capacity(1 + more);
        row.push(self.clone());
        row
    }
}

impl RowKey for Row {
    fn has_null(&self) -> bool {
        self.iter().any(Value::is_null)
    }

    fn row_with_room(&self, more: usize) -> Row {
        let mut row = Vec::with_capacity(self.len() + more);
        row.extend_from_slice(self);
        row
    }
}

/// A 128-bit image of `value` in [`Value`]'s data order (type, then value), for radix
/// sorting; `None` for text, which has none.
///
/// ```
/// use dirigo_operators::typed::{sort_image, Value};
/// assert!(sort_image(&Value::I64(-1)) < sort_image(&Value::I64(0)));
/// assert!(sort_image(&Value::Null) < sort_image(&Value::U64(0)));
/// assert_eq!(sort_image(&Value::Str("x".into())), None);
/// ```
pub fn sort_image(value: &Value) -> Option<u128> {
    const SIGN: u64 = 1 << 63;
    let (rank, low): (u128, u64) = match value {
        Value::Null => (0, 0),
        Value::Bool(b) => (1, u64::from(*b)),
        Value::I64(i) => (2, *i as u64 ^ SIGN),
        Value::U64(u) => (3, *u),
        Value::F64(x) => {
            // `total_cmp`'s order as an unsigned integer.
            let bits = canonical(*x).to_bits();
            (4, if bits & SIGN != 0 { !bits } else { bits | SIGN })
        }
        Value::Str(_) => return None,
        Value::Timestamp(t) => (6, *t as u64 ^ SIGN),
    };
    Some(rank << 64 | u128::from(low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kinds_of_key_start_the_same_row() {
        let one = Value::U64(7);
        let several: Row = vec![Value::U64(7), Value::Null];
        assert_eq!(one.row_with_room(2), vec![Value::U64(7)]);
        assert_eq!(several.row_with_room(0), several);
        assert!(!one.has_null());
        assert!(several.has_null());
    }

    #[test]
    fn images_sort_as_values_do() {
        let values = [
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::I64(i64::MIN),
            Value::I64(-1),
            Value::I64(0),
            Value::I64(i64::MAX),
            Value::U64(0),
            Value::U64(u64::MAX),
            Value::F64(f64::NEG_INFINITY),
            Value::F64(-1.5),
            Value::F64(-0.0),
            Value::F64(0.0),
            Value::F64(f64::MIN_POSITIVE),
            Value::F64(2.5),
            Value::F64(f64::INFINITY),
            Value::F64(f64::NAN),
            Value::F64(-f64::NAN),
            Value::Timestamp(-5),
            Value::Timestamp(1_700_000_000_000),
        ];
        for a in &values {
            for b in &values {
                let images = sort_image(a).cmp(&sort_image(b));
                assert_eq!(images, a.cmp(b), "{a:?} against {b:?}");
            }
        }
    }
}
