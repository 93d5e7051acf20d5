//! Where a character of a TOML string's value is in the file: the string's value is
//! what the TOML parser decoded (escapes resolved, a multi-line string's first line
//! break trimmed), so an offset in it is mapped back through the literal's raw text.

use std::ops::Range;

/// The byte offset in `text` of byte `offset` of the value of the TOML string literal
/// at `span` (quotes included, as `toml::Spanned` gives it). Falls back to the
/// literal's start when the span does not hold a string literal.
///
/// For `where = "a\tb > 'x'"`, the value is `a<TAB>b > 'x'`: its byte 6 (`'`) is the
/// file's byte 15.
pub fn file_offset(text: &str, span: Range<usize>, offset: usize) -> usize {
    let Some(raw) = text.get(span.clone()) else {
        return span.start;
    };
    let (open, basic) = if raw.starts_with("\"\"\"") {
        (3, true)
    } else if raw.starts_with("'''") {
        (3, false)
    } else if raw.starts_with('"') {
        (1, true)
    } else if raw.starts_with('\'') {
        (1, false)
    } else {
        return span.start;
    };
    let mut at = open;
    // A multi-line string's line break right after the opening quotes is not part of it.
    if open == 3 {
        if raw[at..].starts_with("\r\n") {
            at += 2;
        } else if raw[at..].starts_with('\n') {
            at += 1;
        }
    }
    let body_end = raw.len().saturating_sub(open).max(at);
    let mut decoded = 0;
    let bytes = raw.as_bytes();
    while at < body_end && decoded < offset {
        if basic && bytes[at] == b'\\' {
            let next = bytes.get(at + 1).copied().unwrap_or(b' ');
            let (raw_len, value_len) = match next {
                b'u' => (6, char_len(raw.get(at + 2..at + 6))),
                b'U' => (10, char_len(raw.get(at + 2..at + 10))),
                b'x' => (4, char_len(raw.get(at + 2..at + 4))),
                b' ' | b'\t' | b'\n' | b'\r' => {
                    // A line-ending backslash: the break and the whitespace after it go.
                    let mut end = at + 1;
                    while end < body_end && raw.as_bytes()[end].is_ascii_whitespace() {
                        end += 1;
                    }
                    (end - at, 0)
                }
                _ => (2, 1),
            };
            at += raw_len;
            decoded += value_len;
        } else {
            let width = raw[at..].chars().next().map_or(1, char::len_utf8);
            at += width;
            decoded += width;
        }
    }
    span.start + at.min(raw.len())
}

/// The UTF-8 length of the character with hexadecimal code `hex`.
fn char_len(hex: Option<&str>) -> usize {
    hex.and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .and_then(char::from_u32)
        .map_or(1, char::len_utf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, needle: &str, offset: usize) -> usize {
        let start = text.find(needle).unwrap();
        file_offset(text, start..start + needle.len(), offset)
    }

    #[test]
    fn offsets_map_through_every_kind_of_literal() {
        let text = r#"where = "a\tb > 'x'""#;
        assert_eq!(&text[at(text, r#""a\tb > 'x'""#, 6)..][..1], "'");
        let text = "where = 'amount > ''x'";
        assert_eq!(at(text, "'amount > ''x'", 9), 18);
        let text = "where = \"\"\"\namount\n  > 'x'\"\"\"";
        let offset = at(text, "\"\"\"\namount\n  > 'x'\"\"\"", 11);
        assert_eq!(&text[offset..offset + 3], "'x'");
        let text = r#"w = "\u00e9 > x""#;
        // `é` is two bytes in the value, six in the file.
        assert_eq!(&text[at(text, r#""\u00e9 > x""#, 5)..][..1], "x");
        assert_eq!(file_offset("x = 1", 4..5, 3), 4);
    }
}
