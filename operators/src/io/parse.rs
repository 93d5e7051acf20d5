//! Parsing records for file and TCP sources: framing a byte stream into lines
//! ([`LineFramer`]) or length-prefixed frames ([`LengthFramer`]), and decoding one
//! record from a line or frame as CSV or JSON ([`Decode`], [`decode_line`]).
//!
//! Every error is a message that says what was expected and what was found, meant for
//! the `reason` of a dead letter (see [`super::dead_letter`]), e.g.
//! `field 2 (value): expected an unsigned integer, found "abc"` or
//! `expected 3 fields (key,value,time), found 2`.
//!
//! A source drives them like this: push each chunk read into a framer, decode every
//! `Ok` frame, and send every error (framing or decoding) to its dead letters with the
//! frame's position; skip a CSV header line with [`is_csv_header`].

use super::generator::KeyedRecord;

/// The default maximum length of a line or frame: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1 << 20;

/// At most this many characters of an offending field are quoted in an error.
const MAX_QUOTED: usize = 64;

/// A record that can be decoded from a CSV line's fields or from a JSON line.
pub trait Decode: Sized {
    /// Decodes a record from the fields of one CSV line (already split and trimmed;
    /// see [`csv_fields`]).
    fn decode_csv(fields: &[&str]) -> Result<Self, String>;

    /// Decodes a record from one line of JSON.
    fn decode_json(line: &str) -> Result<Self, String>;
}

/// The text format of records in a line or frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Comma-separated fields; see [`Decode::decode_csv`].
    Csv,
    /// One JSON value; see [`Decode::decode_json`].
    Json,
}

/// `text` quoted for an error message (Rust string escapes), cut to [`MAX_QUOTED`]
/// characters with a trailing `...` when longer.
fn quote(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Splits a CSV line on `,` and trims spaces and tabs around each field. No quoting:
/// enough for records of numbers.
pub fn csv_fields(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.trim_matches([' ', '\t']))
        .collect()
}

/// Whether `line` is the CSV header `key,value,time` (case and spaces around fields
/// ignored, a leading UTF-8 byte order mark allowed), which a source skips.
pub fn is_csv_header(line: &str) -> bool {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let fields = csv_fields(line.trim_end_matches(['\r', '\n']));
    fields.len() == 3
        && fields
            .iter()
            .zip(["key", "value", "time"])
            .all(|(f, name)| f.eq_ignore_ascii_case(name))
}

/// Decodes one record from a line or frame (without its line ending) in `format`. The
/// bytes must be UTF-8; a blank line is an error (callers that allow blank lines skip
/// them before decoding).
pub fn decode_line<T: Decode>(line: &[u8], format: Format) -> Result<T, String> {
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "expected UTF-8 text, found an invalid byte sequence at byte {}",
            e.valid_up_to()
        )
    })?;
    if text.trim().is_empty() {
        return Err(match format {
            Format::Csv => "expected a record, found an empty line".to_owned(),
            Format::Json => "expected a JSON record, found an empty line".to_owned(),
        });
    }
    match format {
        Format::Csv => T::decode_csv(&csv_fields(text)),
        Format::Json => T::decode_json(text),
    }
}

/// Parses CSV field `index` (0-based) named `name` as a `u64`.
fn csv_u64(fields: &[&str], index: usize, name: &str) -> Result<u64, String> {
    let field = fields[index];
    field.parse::<u64>().map_err(|e| {
        let what = match e.kind() {
            std::num::IntErrorKind::PosOverflow => "an unsigned integer below 2^64",
            _ => "an unsigned integer",
        };
        format!(
            "field {} ({name}): expected {what}, found {}",
            index + 1,
            quote(field)
        )
    })
}

impl Decode for KeyedRecord {
    /// Three unsigned integers, `key,value,time`.
    fn decode_csv(fields: &[&str]) -> Result<Self, String> {
        if fields.len() != 3 {
            return Err(format!(
                "expected 3 fields (key,value,time), found {}",
                fields.len()
            ));
        }
        Ok(KeyedRecord {
            key: csv_u64(fields, 0, "key")?,
            value: csv_u64(fields, 1, "value")?,
            time: csv_u64(fields, 2, "time")?,
        })
    }

    /// An object `{"key": u64, "value": u64, "time": u64}`; unknown fields are refused.
    fn decode_json(line: &str) -> Result<Self, String> {
        const EXPECTED: &str =
            r#"expected a JSON object {"key", "value", "time"} of unsigned integers"#;
        let trimmed = line.trim();
        // serde would also take the fields as an array; only an object is a record.
        if !trimmed.starts_with('{') {
            return Err(format!("{EXPECTED}, found {}", quote(trimmed)));
        }
        serde_json::from_str(trimmed).map_err(|e| format!("{EXPECTED}: {e}"))
    }
}

/// Splits a byte stream, pushed in chunks of any size, into lines.
///
/// Lines end at `\n`; a `\r` before it is stripped. Each item pushed to `out` is one
/// line, in stream order, so a caller can number lines by counting items. A line
/// longer than the maximum (not counting its ending) is not buffered: as soon as it is
/// known to be too long an `Err` is pushed in its place, and the rest of it is skipped
/// up to the next `\n`. At the end of the stream, [`LineFramer::finish`] gives the last
/// line when it has no `\n`.
#[derive(Clone, Debug)]
pub struct LineFramer {
    /// The start of the current line, when it began in an earlier chunk.
    buf: Vec<u8>,
    /// The longest line accepted, bytes.
    max: usize,
    /// Whether the current line was too long and is being skipped.
    skipping: bool,
}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineFramer {
    /// A framer accepting lines of up to [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new() -> Self {
        Self::with_max_line(DEFAULT_MAX_FRAME)
    }

    /// A framer accepting lines of up to `max` bytes (not counting the line ending).
    pub fn with_max_line(max: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// The longest line accepted, bytes.
    pub fn max_line(&self) -> usize {
        self.max
    }

    /// Bytes of an unfinished line held until its end comes.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The error for a line that is too long.
    fn too_long(&self) -> String {
        format!(
            "expected a line of at most {} bytes, found a longer one (skipped)",
            self.max
        )
    }

    /// Frames the lines that `chunk` completes into `out`, keeping an unfinished tail.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Result<Vec<u8>, String>>) {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..end];
            rest = &rest[end + 1..];
            if self.skipping {
                // The end of a line already reported as too long.
                self.skipping = false;
                continue;
            }
            let mut len = self.buf.len() + piece.len();
            let last = piece.last().or(self.buf.last());
            if last == Some(&b'\r') {
                len -= 1;
            }
            if len > self.max {
                self.buf.clear();
                out.push(Err(self.too_long()));
            } else if self.buf.is_empty() {
                out.push(Ok(piece[..len].to_vec()));
            } else {
                self.buf.extend_from_slice(piece);
                self.buf.truncate(len);
                out.push(Ok(self.buf.clone()));
                self.buf.clear();
            }
        }
        if self.skipping || rest.is_empty() {
            return;
        }
        // An unfinished line: one byte more than the maximum may be a `\r`.
        if self.buf.len() + rest.len() > self.max.saturating_add(1) {
            self.buf.clear();
            self.skipping = true;
            out.push(Err(self.too_long()));
        } else {
            self.buf.extend_from_slice(rest);
        }
    }

    /// At the end of the stream: frames the last line if it had no `\n` (stripping a
    /// final `\r`), and resets the framer for another stream.
    pub fn finish(&mut self, out: &mut Vec<Result<Vec<u8>, String>>) {
        let skipping = std::mem::replace(&mut self.skipping, false);
        if skipping || self.buf.is_empty() {
            self.buf.clear();
            return;
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() > self.max {
            out.push(Err(self.too_long()));
        } else {
            out.push(Ok(self.buf.clone()));
        }
        self.buf.clear();
    }
}

/// Splits a byte stream, pushed in chunks of any size, into length-prefixed frames: a
/// 4-byte big-endian payload length, then the payload.
///
/// A length over the maximum is fatal: nothing in the stream marks where the next frame
/// starts, so the framer cannot resynchronise. [`LengthFramer::push`] then returns the
/// error (after pushing the frames that came before the bad length), and so does every
/// later call; the caller should close that connection (and may dead-letter the
/// error). An empty frame (length 0) is framed as an empty payload.
#[derive(Clone, Debug)]
pub struct LengthFramer {
    /// The length prefix read so far.
    header: [u8; 4],
    /// How many bytes of `header` are read.
    header_len: usize,
    /// The payload length of the current frame, once its prefix is read.
    need: Option<usize>,
    /// The payload read so far, when it began in an earlier chunk.
    buf: Vec<u8>,
    /// The largest payload accepted, bytes.
    max: usize,
    /// Bytes consumed so far, for error positions.
    offset: u64,
    /// The fatal error, once there is one.
    failed: Option<String>,
}

impl Default for LengthFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl LengthFramer {
    /// A framer accepting payloads of up to [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A framer accepting payloads of up to `max` bytes.
    pub fn with_max_frame(max: usize) -> Self {
        LengthFramer {
            header: [0; 4],
            header_len: 0,
            need: None,
            buf: Vec::new(),
            max,
            offset: 0,
            failed: None,
        }
    }

    /// The largest payload accepted, bytes.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Whether the stream has failed (a length over the maximum): the caller should
    /// close it.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Frames the payloads that `chunk` completes into `out`, keeping an unfinished
    /// frame. Returns the fatal error of a length over the maximum (see the type's
    /// docs), after pushing the frames before it.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            match self.need {
                None => {
                    let take = (4 - self.header_len).min(rest.len());
                    self.header[self.header_len..self.header_len + take]
                        .copy_from_slice(&rest[..take]);
                    self.header_len += take;
                    rest = &rest[take..];
                    if self.header_len < 4 {
                        break;
                    }
                    self.header_len = 0;
                    let len = u32::from_be_bytes(self.header);
                    let start = self.offset + (chunk.len() - rest.len()) as u64 - 4;
                    match usize::try_from(len) {
                        Ok(len) if len <= self.max => {
                            if len == 0 {
                                out.push(Vec::new());
                            } else {
                                self.need = Some(len);
                            }
                        }
                        _ => {
                            let e = format!(
                                "expected a frame length of at most {} bytes, found {len} \
                                 (length prefix at byte {start}); cannot resynchronise",
                                self.max
                            );
                            self.offset += (chunk.len() - rest.len()) as u64;
                            self.failed = Some(e.clone());
                            return Err(e);
                        }
                    }
                }
                Some(len) => {
                    let take = (len - self.buf.len()).min(rest.len());
                    let (part, after) = rest.split_at(take);
                    rest = after;
                    if self.buf.is_empty() && take == len {
                        // The whole payload is in this chunk.
                        out.push(part.to_vec());
                        self.need = None;
                    } else {
                        self.buf.extend_from_slice(part);
                        if self.buf.len() == len {
                            out.push(std::mem::take(&mut self.buf));
                            self.need = None;
                        }
                    }
                }
            }
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    /// At the end of the stream: an error if it ended inside a frame (or the stream had
    /// failed), and resets the framer for another stream.
    pub fn finish(&mut self) -> Result<(), String> {
        let result = if let Some(e) = self.failed.take() {
            Err(e)
        } else if self.header_len > 0 {
            Err(format!(
                "expected a 4-byte length prefix, found the stream's end after {} bytes of it",
                self.header_len
            ))
        } else if let Some(len) = self.need {
            Err(format!(
                "expected a payload of {len} bytes, found the stream's end after {} bytes of it",
                self.buf.len()
            ))
        } else {
            Ok(())
        };
        *self = Self::with_max_frame(self.max);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(line: &str) -> Result<KeyedRecord, String> {
        decode_line(line.as_bytes(), Format::Csv)
    }

    fn json(line: &str) -> Result<KeyedRecord, String> {
        decode_line(line.as_bytes(), Format::Json)
    }

    const R: KeyedRecord = KeyedRecord {
        key: 1,
        value: 22,
        time: 333,
    };

    #[test]
    fn good_csv() {
        assert_eq!(csv("1,22,333"), Ok(R));
        assert_eq!(csv(" 1 ,\t22, 333 "), Ok(R));
        assert_eq!(csv("18446744073709551615,0,0").unwrap().key, u64::MAX);
    }

    #[test]
    fn bad_csv() {
        let cases = [
            ("1,22", "expected 3 fields (key,value,time), found 2"),
            ("1,22,333,4", "expected 3 fields (key,value,time), found 4"),
            (
                "1,abc,3",
                r#"field 2 (value): expected an unsigned integer, found "abc""#,
            ),
            (
                "x,2,3",
                r#"field 1 (key): expected an unsigned integer, found "x""#,
            ),
            (
                "1,2,",
                r#"field 3 (time): expected an unsigned integer, found """#,
            ),
            (
                "1,-2,3",
                r#"field 2 (value): expected an unsigned integer, found "-2""#,
            ),
            (
                "1,2.5,3",
                r#"field 2 (value): expected an unsigned integer, found "2.5""#,
            ),
            (
                "18446744073709551616,2,3",
                r#"field 1 (key): expected an unsigned integer below 2^64, found "18446744073709551616""#,
            ),
            ("", "expected a record, found an empty line"),
            ("  ", "expected a record, found an empty line"),
        ];
        for (line, reason) in cases {
            assert_eq!(csv(line), Err(reason.to_owned()), "{line:?}");
        }
        let long = format!("1,{},3", "z".repeat(200));
        let err = csv(&long).unwrap_err();
        assert!(
            err.ends_with(&format!("\"{}\"...", "z".repeat(64))),
            "{err}"
        );
        let err = decode_line::<KeyedRecord>(b"1,\xff,3", Format::Csv).unwrap_err();
        assert_eq!(
            err,
            "expected UTF-8 text, found an invalid byte sequence at byte 2"
        );
    }

    #[test]
    fn good_json() {
        assert_eq!(json(r#"{"key": 1, "value": 22, "time": 333}"#), Ok(R));
        assert_eq!(json(r#" {"time":333,"key":1,"value":22} "#), Ok(R));
    }

    #[test]
    fn bad_json() {
        let cases = [
            (r#"{"key": 1, "value": 22}"#, "missing field `time`"),
            (
                r#"{"key": 1, "value": 22, "time": 3, "x": 0}"#,
                "unknown field `x`",
            ),
            (
                r#"{"key": "1", "value": 22, "time": 3}"#,
                "invalid type: string \"1\"",
            ),
            (
                r#"{"key": -1, "value": 22, "time": 3}"#,
                "invalid value: integer `-1`",
            ),
            (
                r#"{"key": 1.5, "value": 22, "time": 3}"#,
                "invalid type: floating point",
            ),
            (r#"{"key": 1, "value": 22, "time": 3"#, "EOF while parsing"),
            (
                r#"{"key": 1, "value": 22, "time": 3} x"#,
                "trailing characters",
            ),
            (
                "[1, 22, 333]",
                r#"of unsigned integers, found "[1, 22, 333]""#,
            ),
            ("1,22,333", r#"of unsigned integers, found "1,22,333""#),
            ("null", r#"found "null""#),
            ("", "found an empty line"),
        ];
        for (line, needle) in cases {
            let err = json(line).unwrap_err();
            assert!(err.contains(needle), "{line:?}: {err}");
        }
        let err = json(r#"{"key": 1}"#).unwrap_err();
        assert!(
            err.starts_with(
                r#"expected a JSON object {"key", "value", "time"} of unsigned integers: "#
            ),
            "{err}"
        );
    }

    #[test]
    fn csv_header() {
        assert!(is_csv_header("key,value,time"));
        assert!(is_csv_header("Key, Value, TIME\r"));
        assert!(is_csv_header("\u{feff}key,value,time"));
        assert!(!is_csv_header("key,value"));
        assert!(!is_csv_header("1,2,3"));
        assert!(!is_csv_header("time,value,key"));
    }

    /// Frames `chunks` with `framer`, then finishes.
    fn lines(framer: &mut LineFramer, chunks: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        framer.finish(&mut out);
        out
    }

    fn ok(line: &str) -> Result<Vec<u8>, String> {
        Ok(line.as_bytes().to_vec())
    }

    #[test]
    fn lines_in_one_chunk() {
        let mut framer = LineFramer::new();
        assert_eq!(
            lines(&mut framer, &[b"a,1\nb,2\n\nc"]),
            vec![ok("a,1"), ok("b,2"), ok(""), ok("c")]
        );
        assert_eq!(framer.buffered(), 0);
        assert_eq!(lines(&mut framer, &[b"x\n"]), vec![ok("x")]);
        assert_eq!(lines(&mut framer, &[]), vec![]);
    }

    #[test]
    fn crlf_is_stripped() {
        let mut framer = LineFramer::new();
        assert_eq!(
            lines(&mut framer, &[b"a\r\nb\r", b"\nc\r\r\nd\r"]),
            vec![ok("a"), ok("b"), ok("c\r"), ok("d")]
        );
        // A lone `\r` inside a line is kept.
        assert_eq!(lines(&mut framer, &[b"a\rb\n"]), vec![ok("a\rb")]);
    }

    #[test]
    fn chunks_split_mid_line() {
        let text = b"1,22,333\n4,55,666\r\n7,88,999";
        let whole = lines(&mut LineFramer::new(), &[text]);
        assert_eq!(whole, vec![ok("1,22,333"), ok("4,55,666"), ok("7,88,999")]);
        // Every way of cutting the text in two, and byte by byte.
        for cut in 0..=text.len() {
            let (a, b) = text.split_at(cut);
            assert_eq!(
                lines(&mut LineFramer::new(), &[a, b]),
                whole,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(lines(&mut LineFramer::new(), &bytes), whole);
        let mut framer = LineFramer::new();
        let mut out = Vec::new();
        framer.push(b"1,2", &mut out);
        assert!(out.is_empty());
        assert_eq!(framer.buffered(), 3);
    }

    #[test]
    fn oversize_lines_are_errors_not_buffered() {
        let max = 8;
        let err = || {
            Err::<Vec<u8>, String>(
                "expected a line of at most 8 bytes, found a longer one (skipped)".to_owned(),
            )
        };
        // In one chunk.
        let mut framer = LineFramer::with_max_line(max);
        assert_eq!(
            lines(&mut framer, &[b"12345678\n123456789\nok\n"]),
            vec![ok("12345678"), err(), ok("ok")]
        );
        // Exactly the maximum, with CRLF split across chunks.
        assert_eq!(
            lines(&mut framer, &[b"12345678\r", b"\nok\n"]),
            vec![ok("12345678"), ok("ok")]
        );
        // A huge line arriving in pieces is reported once, without buffering it.
        let mut out = Vec::new();
        framer.push(b"ok\n12345", &mut out);
        for _ in 0..1000 {
            framer.push(b"0123456789", &mut out);
            assert!(framer.buffered() <= max + 1);
        }
        framer.push(b"tail\nnext\n", &mut out);
        framer.finish(&mut out);
        assert_eq!(out, vec![ok("ok"), err(), ok("next")]);
        // An oversize last line without a newline, found at the end.
        assert_eq!(lines(&mut framer, &[b"123456789"]), vec![err()]);
        assert_eq!(lines(&mut framer, &[b"12345678\r"]), vec![ok("12345678")]);
        // The default is 1 MiB.
        assert_eq!(LineFramer::default().max_line(), 1 << 20);
    }

    /// A length-prefixed frame.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut bytes = (payload.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn length_frames_across_chunks() {
        let payloads: Vec<&[u8]> = vec![b"1,22,333", b"", b"{\"key\":1}", &[0xff; 300]];
        let stream: Vec<u8> = payloads.iter().flat_map(|p| frame(p)).collect();
        let expected: Vec<Vec<u8>> = payloads.iter().map(|p| p.to_vec()).collect();
        for size in [1, 2, 3, 4, 5, 7, 13, 64, 1000] {
            let mut framer = LengthFramer::new();
            let mut out = Vec::new();
            for chunk in stream.chunks(size) {
                framer.push(chunk, &mut out).unwrap();
            }
            assert_eq!(out, expected, "chunks of {size}");
            framer.finish().unwrap();
        }
        // Every way of cutting the stream in two.
        for cut in 0..=stream.len() {
            let mut framer = LengthFramer::new();
            let mut out = Vec::new();
            framer.push(&stream[..cut], &mut out).unwrap();
            framer.push(&stream[cut..], &mut out).unwrap();
            assert_eq!(out, expected, "cut at {cut}");
            framer.finish().unwrap();
        }
    }

    #[test]
    fn length_frame_over_the_maximum_is_fatal() {
        let mut framer = LengthFramer::with_max_frame(16);
        let mut stream = frame(b"good");
        stream.extend_from_slice(&1000u32.to_be_bytes());
        stream.extend_from_slice(&frame(b"never"));
        let mut out = Vec::new();
        let err = framer.push(&stream, &mut out).unwrap_err();
        assert_eq!(
            err,
            "expected a frame length of at most 16 bytes, found 1000 (length prefix at byte 8); \
             cannot resynchronise"
        );
        assert_eq!(out, vec![b"good".to_vec()]);
        assert!(framer.is_failed());
        assert_eq!(framer.push(&frame(b"x"), &mut out), Err(err.clone()));
        assert_eq!(out.len(), 1);
        assert_eq!(framer.finish(), Err(err));
        assert!(!framer.is_failed());
        // Exactly the maximum is fine, and the offset counts earlier chunks.
        let mut framer = LengthFramer::with_max_frame(4);
        framer.push(&frame(b"abcd"), &mut out).unwrap();
        let err = framer.push(&frame(b"abcde"), &mut out).unwrap_err();
        assert!(err.contains("found 5 (length prefix at byte 8)"), "{err}");
        assert_eq!(LengthFramer::default().max_frame(), 1 << 20);
    }

    #[test]
    fn length_stream_ending_mid_frame() {
        let mut framer = LengthFramer::new();
        let mut out = Vec::new();
        framer.push(&[0, 0], &mut out).unwrap();
        assert_eq!(
            framer.finish(),
            Err(
                "expected a 4-byte length prefix, found the stream's end after 2 bytes of it"
                    .to_owned()
            )
        );
        framer.push(&frame(b"hello")[..7], &mut out).unwrap();
        assert_eq!(
            framer.finish(),
            Err(
                "expected a payload of 5 bytes, found the stream's end after 3 bytes of it"
                    .to_owned()
            )
        );
        assert!(out.is_empty());
        framer.push(&frame(b"hello"), &mut out).unwrap();
        assert_eq!(out, vec![b"hello".to_vec()]);
        framer.finish().unwrap();
    }

    #[test]
    fn frames_decode() {
        let mut framer = LengthFramer::new();
        let mut out = Vec::new();
        framer
            .push(&frame(br#"{"key":1,"value":22,"time":333}"#), &mut out)
            .unwrap();
        assert_eq!(decode_line::<KeyedRecord>(&out[0], Format::Json), Ok(R));
        let format: Format = serde_json::from_str("\"csv\"").unwrap();
        assert_eq!(format, Format::Csv);
    }
}
