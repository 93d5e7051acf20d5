//! File and TCP sources end to end, on a 2-shard runtime: a mix of good and malformed
//! records goes in; every good record reaches the sink, every malformed one is in the
//! dead-letter file with its position and reason, and the counts match. And the TCP
//! sink: every record arrives at its peer as one JSON line, then the peer reads the end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dirigo_operators::dataflow::{App, AppBuilder, Msg};
use dirigo_operators::io::{DeadLetterSink, Format, Framing, KeyedRecord, TcpSourceOptions};
use dirigo_operators::source::Pacing;
use dirigo_runtime::Runtime;

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dirigo-sources-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rec(key: u64, value: u64, time: u64) -> KeyedRecord {
    KeyedRecord { key, value, time }
}

/// Good records with keys from `first`, in event-time order.
fn many(first: u64, count: u64) -> Vec<KeyedRecord> {
    (first..first + count)
        .map(|k| rec(k, k * 3 % 1000, k))
        .collect()
}

fn csv(record: &KeyedRecord) -> String {
    format!("{},{},{}\n", record.key, record.value, record.time)
}

fn json(record: &KeyedRecord) -> String {
    format!(
        "{{\"key\":{},\"value\":{},\"time\":{}}}",
        record.key, record.value, record.time
    )
}

/// Runs `app` on a 2-shard runtime, calling `drive` once it has started.
fn run(app: &App, drive: impl FnOnce()) {
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .expect("the runtime starts");
    app.start(&runtime.ingress());
    drive();
    assert!(app.wait(Duration::from_secs(20)), "the app did not finish");
    runtime.shutdown();
}

/// The lines of a dead-letter file.
fn letters_in(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every expected `(position, part of the reason)` has its letter, from `source`, and
/// there are no others.
fn assert_letters(letters: &[String], source: &str, expected: &[(&str, &str)]) {
    assert_eq!(
        letters.len(),
        expected.len(),
        "letters: {letters:#?}\nexpected: {expected:#?}"
    );
    for (position, reason) in expected {
        let tag = format!("\"position\":\"{position}\"");
        let letter = letters
            .iter()
            .find(|l| l.contains(&tag))
            .unwrap_or_else(|| panic!("no letter at {position}: {letters:#?}"));
        assert!(
            letter.contains(&format!("\"source\":\"{source}\"")),
            "{letter}"
        );
        assert!(
            letter.contains(reason),
            "the letter at {position} should say {reason:?}: {letter}"
        );
    }
}

fn sorted(mut records: Vec<KeyedRecord>) -> Vec<KeyedRecord> {
    records.sort();
    records
}

#[test]
fn csv_file() {
    let dir = scratch("csv");
    let input = dir.join("in.csv");
    let dead = dir.join("dead.jsonl");
    let mut text: Vec<u8> = Vec::new();
    let mut good = vec![rec(1, 10, 100), rec(2, 20, 200)];
    text.extend(b"key,value,time\n1,10,100\n2, 20 ,200\n\n");
    text.extend(b"3,abc,300\n"); // line 5
    text.extend(b"4,40\n"); // line 6
    text.extend(b"5,50,500,7\n"); // line 7
    text.extend(b"6,6\xff0,600\n"); // line 8
    text.extend(b"7,70,700\r\n"); // line 9
    good.push(rec(7, 70, 700));
    text.extend(b"-8,80,800\n"); // line 10
    text.extend(b"18446744073709551616,1,1\n"); // line 11
    text.extend(b"   \n"); // line 12
                           // Enough lines to cross many read chunks.
    let bulk = many(1000, 20_000);
    for record in &bulk {
        text.extend(csv(record).as_bytes());
    }
    good.extend(&bulk);
    text.extend(b"key,value,time\n"); // line 20 013: a header past the first line
    text.extend(b"9,90,900"); // no final newline
    good.push(rec(9, 90, 900));
    std::fs::write(&input, &text).unwrap();

    let app = AppBuilder::new(0, "csv-file");
    let letters = DeadLetterSink::to_file(&dead);
    let records = app
        .source_file(
            "file",
            &input,
            Format::Csv,
            0,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let out = records.collect("out");
    let app = app.build();
    run(&app, || {});

    assert_eq!(sorted(out.take()), sorted(good));
    let source = input.display().to_string();
    let expected = [
        (
            "line 5",
            "field 2 (value): expected an unsigned integer, found \\\"abc\\\"",
        ),
        ("line 6", "expected 3 fields (key,value,time), found 2"),
        ("line 7", "expected 3 fields (key,value,time), found 4"),
        (
            "line 8",
            "expected UTF-8 text, found an invalid byte sequence at byte 3",
        ),
        ("line 10", "field 1 (key): expected an unsigned integer"),
        (
            "line 11",
            "field 1 (key): expected an unsigned integer below 2^64",
        ),
        (
            "line 20013",
            "field 1 (key): expected an unsigned integer, found \\\"key\\\"",
        ),
    ];
    assert_letters(&letters_in(&dead), &source, &expected);
    assert_eq!(letters.count(), expected.len() as u64);
    assert_eq!(letters.failed_writes(), 0);
    assert!(letters.lines().is_empty(), "every letter is in the file");
    // The record is kept with its letter, invalid bytes replaced.
    assert!(letters_in(&dead)[3].contains("\"record\":\"6,6\u{fffd}0,600\""));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_lines_file() {
    let dir = scratch("json");
    let input = dir.join("in.jsonl");
    let dead = dir.join("dead.jsonl");
    let mut text: Vec<u8> = Vec::new();
    let mut good = vec![rec(1, 10, 100)];
    text.extend(json(&good[0]).as_bytes());
    text.extend(b"\n \n"); // lines 1, 2
    text.extend(b"{\"key\":2,\"value\":20\n"); // line 3: truncated
    text.extend(b"{\"key\":3,\"value\":\"x\",\"time\":300}\n"); // line 4
    text.extend(b"[4,40,400]\n"); // line 5
    text.extend(b"{\"key\":5,\"value\":50,\"time\":500,\"extra\":1}\n"); // line 6
    text.extend(b"{\"key\":6,\"value\":60}\n"); // line 7
    text.extend(b"{\"key\":7,\"value\":\xfe,\"time\":700}\n"); // line 8
    text.extend(b"not json\n"); // line 9
    text.extend(b"{\"key\":8,\"value\":80,\"time\":-1}\n"); // line 10
    let bulk = many(100, 5_000);
    for record in &bulk {
        text.extend(json(record).as_bytes());
        text.push(b'\n');
    }
    good.extend(&bulk);
    text.extend(b"{\"key\":9,"); // line 5011: truncated at the end of the file
    std::fs::write(&input, &text).unwrap();

    let app = AppBuilder::new(0, "json-file");
    let letters = DeadLetterSink::to_file(&dead);
    let records = app
        .source_file(
            "file",
            &input,
            Format::Json,
            10,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let out = records.collect("out");
    let app = app.build();
    run(&app, || {});

    assert_eq!(sorted(out.take()), sorted(good));
    let expected = [
        ("line 3", "EOF while parsing"),
        ("line 4", "invalid type: string \\\"x\\\", expected u64"),
        ("line 5", "expected a JSON object"),
        ("line 6", "unknown field `extra`"),
        ("line 7", "missing field `time`"),
        ("line 8", "expected UTF-8 text"),
        ("line 9", "expected a JSON object"),
        ("line 10", "invalid value: integer `-1`"),
        ("line 5011", "EOF while parsing"),
    ];
    assert_letters(&letters_in(&dead), &input.display().to_string(), &expected);
    assert_eq!(letters.count(), expected.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_at_u64_max_in_a_file_is_a_dead_letter_and_the_file_is_read_to_its_end() {
    let dir = scratch("end-of-time");
    let input = dir.join("in.csv");
    let dead = dir.join("dead.jsonl");
    let good = many(0, 10_000);
    let mut text = String::new();
    for (index, record) in good.iter().enumerate() {
        if index == 2_000 {
            text.push_str(&format!("1,1,{}\n", u64::MAX)); // line 2001
        }
        text.push_str(&csv(record));
    }
    std::fs::write(&input, text).unwrap();
    let app = AppBuilder::new(0, "end-of-time-file");
    let letters = DeadLetterSink::to_file(&dead);
    let records = app
        .source_file(
            "file",
            &input,
            Format::Csv,
            0,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let out = records.collect("out");
    let app = app.build();
    run(&app, || {});
    assert_eq!(sorted(out.take()), good);
    assert_letters(
        &letters_in(&dead),
        &input.display().to_string(),
        &[(
            "line 2001",
            "event time 18446744073709551615 ms is out of range: expected 0..=253402300799999",
        )],
    );
    assert_eq!(letters.count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_at_u64_max_over_tcp_is_a_dead_letter_and_the_stream_goes_on() {
    let dir = scratch("end-of-time-tcp");
    let dead = dir.join("dead.jsonl");
    let app = AppBuilder::new(0, "end-of-time-tcp");
    let letters = DeadLetterSink::to_file(&dead);
    let options = TcpSourceOptions::new(Framing::Lines(Format::Json)).max_connections(1);
    let (records, handle) = app
        .source_tcp(
            "tcp",
            localhost(),
            options,
            0,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let addr = handle.local_addr();
    let out = records.collect("out");
    let app = app.build();
    let good = many(0, 2_000);
    run(&app, || {
        let mut conn = TcpStream::connect(addr).unwrap();
        for record in &good[..1_000] {
            writeln!(conn, "{}", json(record)).unwrap();
        }
        writeln!(conn, "{}", json(&rec(1, 1, u64::MAX))).unwrap(); // line 1001
        conn.flush().unwrap();
        // The rest after a pause: a stream that the bad line ended would lose it.
        std::thread::sleep(Duration::from_millis(100));
        for record in &good[1_000..] {
            writeln!(conn, "{}", json(record)).unwrap();
        }
    });
    assert_eq!(sorted(out.take()), good);
    assert_letters(
        &letters_in(&dead),
        &addr.to_string(),
        &[("conn 1 line 1001", "out of range")],
    );
    assert_eq!(handle.records(), good.len() as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_an_error() {
    let app = AppBuilder::new(0, "missing");
    let error = app
        .source_file(
            "file",
            "/no/such/dir/in.csv",
            Format::Csv,
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .err()
        .expect("opening fails");
    assert!(error.to_string().contains("/no/such/dir/in.csv"), "{error}");
}

/// Writes `bytes` in small pieces, so that frames cross reads.
fn write_in_pieces(stream: &mut TcpStream, bytes: &[u8]) {
    for piece in bytes.chunks(777) {
        stream.write_all(piece).unwrap();
    }
    stream.flush().unwrap();
}

/// Waits until `done` holds (panics after 10 s).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn tcp_csv_lines_until_max_connections() {
    let dir = scratch("tcp-lines");
    let dead = dir.join("dead.jsonl");
    let app = AppBuilder::new(0, "tcp-lines");
    let letters = DeadLetterSink::to_file(&dead);
    let options = TcpSourceOptions::new(Framing::Lines(Format::Csv))
        .max_frame(256)
        .max_connections(3);
    let (records, handle) = app
        .source_tcp(
            "tcp",
            localhost(),
            options,
            5,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let addr = handle.local_addr();
    assert_ne!(addr.port(), 0);
    let out = records.collect("out");
    let app = app.build();

    // Connection 1: header, good lines, a bad number, an overlong line, a wrong count.
    let mut one: Vec<u8> = b"key,value,time\n".to_vec();
    let mut good = many(0, 3_000);
    for record in &good {
        one.extend(csv(record).as_bytes());
    }
    one.extend(b"1,x,1\n"); // line 3002
    one.extend(format!("5,5,{}\n", "5".repeat(1000)).as_bytes()); // line 3003: too long
    one.extend(b"6,6,6\r\n"); // line 3004
    good.push(rec(6, 6, 6));
    one.extend(b"7,7\n"); // line 3005
                          // Connection 2: invalid UTF-8, blank lines, a last line without a newline.
    let mut two: Vec<u8> = b"\xc3\x28,1,1\n\n".to_vec(); // line 1, line 2
    let second = many(10_000, 2_000);
    for record in &second {
        two.extend(csv(record).as_bytes());
    }
    good.extend(&second);
    two.extend(b"key,value,time\n"); // line 2003: a header, but not first
    two.extend(b"8,8,8"); // line 2004: cut off by the close, so a letter

    run(&app, || {
        // Connected in order, so accepted in order: connection numbers are known.
        let mut c1 = TcpStream::connect(addr).unwrap();
        let mut c2 = TcpStream::connect(addr).unwrap();
        let c3 = TcpStream::connect(addr).unwrap();
        drop(c3); // an empty connection
        let (half1, rest1) = one.split_at(one.len() / 2);
        write_in_pieces(&mut c1, half1);
        write_in_pieces(&mut c2, &two);
        drop(c2);
        write_in_pieces(&mut c1, rest1);
        drop(c1);
    });

    assert_eq!(sorted(out.take()), sorted(good.clone()));
    let expected = [
        (
            "conn 1 line 3002",
            "field 2 (value): expected an unsigned integer",
        ),
        ("conn 1 line 3003", "expected a line of at most 256 bytes"),
        (
            "conn 1 line 3005",
            "expected 3 fields (key,value,time), found 2",
        ),
        (
            "conn 2 line 1",
            "expected UTF-8 text, found an invalid byte sequence at byte 0",
        ),
        (
            "conn 2 line 2003",
            "field 1 (key): expected an unsigned integer",
        ),
        (
            "conn 2 line 2004",
            "found the end of the connection: the line was cut off",
        ),
    ];
    assert_letters(&letters_in(&dead), &addr.to_string(), &expected);
    assert_eq!(letters.count(), expected.len() as u64);
    assert_eq!(handle.connections_accepted(), 3);
    assert_eq!(handle.connections_closed(), 3);
    assert_eq!(handle.records(), good.len() as u64);
    wait_for("the network thread ends", || handle.is_finished());
    // The listener is closed: no more connections.
    assert!(TcpStream::connect(addr).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn tcp_length_prefixed_until_closed() {
    let dir = scratch("tcp-frames");
    let dead = dir.join("dead.jsonl");
    let app = AppBuilder::new(0, "tcp-frames");
    let letters = DeadLetterSink::to_file(&dead);
    let (records, handle) = app
        .source_tcp(
            "tcp",
            localhost(),
            TcpSourceOptions::new(Framing::LengthPrefixed).max_frame(1024),
            0,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let addr = handle.local_addr();
    // Spread over both shards on the way to the sink.
    let out = records
        .rebalance("spread")
        .filter("all", |r: &KeyedRecord| r.key != u64::MAX)
        .collect("out");
    let app = app.build();

    // Connection 1: good frames, then bad ones, then a length over the maximum (fatal:
    // what follows is never read).
    let mut good = many(0, 2_000);
    let mut one = Vec::new();
    for record in &good {
        one.extend(frame(json(record).as_bytes()));
    }
    one.extend(frame(b"{\"key\":1,\"value\":")); // frame 2001
    one.extend(frame(b"{\"key\":1,\"value\":\xff,\"time\":1}")); // frame 2002
    one.extend(frame(b"")); // frame 2003
    one.extend(frame(b"1,2,3")); // frame 2004
    one.extend(frame(json(&rec(5, 5, 5)).as_bytes())); // frame 2005
    good.push(rec(5, 5, 5));
    one.extend(1_000_000u32.to_be_bytes()); // frame 2006: fatal
    one.extend(frame(json(&rec(6, 6, 6)).as_bytes())); // never read
                                                       // Connection 2: good frames, then a frame cut short by the end of the stream.
    let second = many(50_000, 3_000);
    let mut two = Vec::new();
    for record in &second {
        two.extend(frame(json(record).as_bytes()));
    }
    good.extend(&second);
    let cut = json(&rec(7, 7, 7));
    two.extend(&frame(cut.as_bytes())[..10]); // frame 3001

    run(&app, || {
        let mut c1 = TcpStream::connect(addr).unwrap();
        let mut c2 = TcpStream::connect(addr).unwrap();
        write_in_pieces(&mut c2, &two[..two.len() / 3]);
        // The source may close connection 1 before everything is written.
        let _ = c1.write_all(&one);
        write_in_pieces(&mut c2, &two[two.len() / 3..]);
        drop(c2);
        // The source closes connection 1 at the fatal length.
        let mut rest = Vec::new();
        let _ = c1.read_to_end(&mut rest);
        drop(c1);
        wait_for("both connections are read", || {
            handle.connections_closed() == 2
        });
        assert!(!handle.is_finished(), "only close ends the stream");
        handle.close();
    });

    assert_eq!(sorted(out.take()), sorted(good.clone()));
    let expected = [
        ("conn 1 frame 2001", "EOF while parsing"),
        ("conn 1 frame 2002", "expected UTF-8 text"),
        (
            "conn 1 frame 2003",
            "expected a JSON record, found an empty frame",
        ),
        ("conn 1 frame 2004", "expected a JSON object"),
        (
            "conn 1 frame 2006",
            "expected a frame length of at most 1024 bytes, found 1000000",
        ),
    ];
    let truncated = format!(
        "expected a payload of {} bytes, found the stream's end after 6 bytes of it",
        cut.len()
    );
    let expected = [&expected[..], &[("conn 2 frame 3001", truncated.as_str())]].concat();
    assert_letters(&letters_in(&dead), &addr.to_string(), &expected);
    assert_eq!(letters.count(), expected.len() as u64);
    assert_eq!(handle.connections_accepted(), 2);
    assert_eq!(handle.records(), good.len() as u64);
    wait_for("the network thread ends", || handle.is_finished());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tcp_json_lines_in_memory_letters() {
    let app = AppBuilder::new(0, "tcp-json");
    let letters = DeadLetterSink::in_memory();
    let (records, handle) = app
        .source_tcp(
            "tcp",
            localhost(),
            TcpSourceOptions::new(Framing::Lines(Format::Json)).max_connections(1),
            0,
            |r: &KeyedRecord| r.time,
            letters.clone(),
        )
        .unwrap();
    let out = records.collect("out");
    let app = app.build();
    let good = many(0, 500);
    let mut text = Vec::new();
    for record in &good {
        text.extend(json(record).as_bytes());
        text.extend(b"\n{\"key\":1,\"value\":2,\"time\":\n"); // truncated, every other line
    }
    run(&app, || {
        let mut c = TcpStream::connect(handle.local_addr()).unwrap();
        write_in_pieces(&mut c, &text);
    });
    assert_eq!(sorted(out.take()), good);
    assert_eq!(letters.count(), 500);
    let lines = letters.lines();
    assert!(
        lines[0].contains("\"position\":\"conn 1 line 2\""),
        "{}",
        lines[0]
    );
    assert!(lines[499].contains("\"position\":\"conn 1 line 1000\""));
    assert!(lines.iter().all(|l| l.contains("EOF while parsing")));
}

#[test]
fn tcp_sink_writes_json_lines_then_ends() {
    let listener = TcpListener::bind(localhost()).unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    });
    let app = AppBuilder::new(0, "tcp-sink");
    let records = many(0, 10_000);
    let stream = app.source_iter(
        "records",
        records.iter().map(|r| (r.time, *r)).collect::<Vec<_>>(),
        0,
        Pacing::Unpaced,
    );
    stream.sink_tcp("tcp", addr).unwrap();
    let app = app.build();
    run(&app, || {});
    // The sink shut its connection down when it finished: the reader has its end.
    let text = reader.join().unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = records.iter().map(json).collect();
    expected.sort_unstable();
    assert_eq!(lines, expected);
    assert!(text.ends_with('\n'));

    let app = AppBuilder::new(0, "tcp-sink-refused");
    let closed = TcpListener::bind(localhost())
        .unwrap()
        .local_addr()
        .unwrap();
    let stream = app.source_iter("records", vec![(0, rec(0, 0, 0))], 0, Pacing::Unpaced);
    assert!(stream.sink_tcp("tcp", closed).is_err());
}
