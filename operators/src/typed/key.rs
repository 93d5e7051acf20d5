//! The keys of typed windows, tops and joins ([`RowKey`]): a key of one field is that
//! field's [`Value`] itself, and a key of several fields a [`Row`] of them. A one-field
//! key, the common case, is then cloned, hashed and compared without a vector of its own
//! (which keyed state would otherwise allocate, hash by length and free per record).

use super::value::{Row, Value};
use crate::state::Key;

/// What typed operators key their state by.
pub trait RowKey: Key {
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
}
