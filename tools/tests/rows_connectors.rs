//! Typed rows from `tcp` and `nats` sources through the `dirigo` binary: JSON lines sent
//! over a real socket, and JSON messages published to a real `nats-server` (the test's
//! own, on a free loopback port; the test fails when none starts), each decoded with the
//! source's `schema`, filtered and summed in tumbling windows of event time into a
//! JSON-lines file that equals a reference computed here; malformed payloads are dead
//! letters with their reason and position (`conn N line M`, `stream sequence N`), late
//! rows too when told, and the counts add up. Two `tcp` sources of one app meet in a
//! `union`. And a `schema = "infer"` on a `tcp` or `nats` source exits 2 at its
//! `FILE:LINE:COLUMN`.

// Only `dirigo()` of the shared helpers is used here.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::dirigo;
use dirigo_operators::io::nats::LocalServer;

/// Event time of the first row, ms.
const BASE_MS: u64 = 1_700_000_000_000;
/// Tumbling windows of this many ms.
const WINDOW_MS: u64 = 1_000;

fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dirigo-rows-connectors-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Row `i`: its card, amount and event time.
fn payment(i: u64) -> (String, f64, u64) {
    (
        format!("c{}", i % 5),
        (i * 37 % 500) as f64 + 0.5,
        BASE_MS + i * 97,
    )
}

fn json(i: u64) -> String {
    let (card, amount, ts) = payment(i);
    format!("{{\"card\":\"{card}\",\"amount\":{amount},\"ts\":{ts},\"merchant\":\"m{i}\"}}")
}

/// The windows the pipeline must write for rows `rows`: per (card, window start), the
/// count and sum of the amounts over 100.
fn reference(rows: impl IntoIterator<Item = u64>) -> BTreeMap<(String, u64), (u64, f64)> {
    let mut windows = BTreeMap::new();
    for i in rows {
        let (card, amount, ts) = payment(i);
        if amount > 100.0 {
            let entry = windows
                .entry((card, ts - ts % WINDOW_MS))
                .or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += amount;
        }
    }
    windows
}

/// The windows in the sink's file, checking each line's fields.
fn windows_in(path: &Path) -> BTreeMap<(String, u64), (u64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut windows = BTreeMap::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let start = row["window_start"].as_u64().unwrap();
        assert_eq!(
            row["window_end"].as_u64(),
            Some(start + WINDOW_MS),
            "{line}"
        );
        let key = (row["card"].as_str().unwrap().to_owned(), start);
        let value = (row["n"].as_u64().unwrap(), row["total"].as_f64().unwrap());
        assert!(windows.insert(key, value).is_none(), "twice: {line}");
    }
    windows
}

/// The pipeline's operators and sink, after a source section.
const PIPELINE: &str = "event_time = \"ts\"\n\
    schema = { card = \"string\", amount = \"f64\", ts = \"timestamp_ms\" }\n\
    \n\
    [[app.operator]]\n\
    name = \"big\"\n\
    kind = \"filter\"\n\
    where = \"amount > 100\"\n\
    \n\
    [[app.operator]]\n\
    name = \"per-card\"\n\
    kind = \"window\"\n\
    by = [\"card\"]\n\
    window = { kind = \"tumbling\", size_ms = 1000 }\n\
    aggregates = { n = \"count()\", total = \"sum(amount)\" }\n\
    \n\
    [app.sink]\n\
    kind = \"json-lines\"\n\
    path = \"windows.jsonl\"\n";

/// Runs `dirigo run config` in `dir` (for at most `duration`); its report.
fn run(dir: &Path, config: &Path, duration: &str) -> serde_json::Value {
    let output = dirigo()
        .current_dir(dir)
        .arg("run")
        .arg(config)
        .args(["--duration", duration])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(dir.join("out/report.json")).unwrap()).unwrap()
}

fn letters_of(dir: &Path, app: &str) -> Vec<serde_json::Value> {
    let path = dir.join(format!("out/{app}.dead-letters.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Connects to `port`, retrying while the run starts.
fn connect(port: u16) -> std::net::TcpStream {
    let started = Instant::now();
    loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return stream,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(error) => panic!("no listener on {port}: {error}"),
        }
    }
}

#[test]
fn typed_rows_over_tcp_give_the_expected_windows_and_dead_letters() {
    let dir = folder("tcp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("tcp.toml");
    std::fs::write(
        &config,
        format!(
            "[report]\ndir = \"out\"\n\n[[app]]\nname = \"payments\"\n\n[app.source]\n\
             kind = \"tcp\"\nlisten = \"127.0.0.1:{port}\"\nformat = \"json\"\n\
             out_of_orderness_ms = 600000\n{PIPELINE}"
        ),
    )
    .unwrap();
    // Two connections, one after the other: 300 rows and two malformed lines, then 100
    // rows, a line without its event time, and a blank line (skipped).
    let sender = std::thread::spawn(move || {
        let mut first = connect(port);
        for i in 0..300 {
            writeln!(first, "{}", json(i)).unwrap();
            if i == 10 {
                writeln!(
                    first,
                    "{{\"card\":\"c1\",\"amount\":\"lots\",\"ts\":{BASE_MS}}}"
                )
                .unwrap();
            }
            if i == 20 {
                writeln!(first, "not json").unwrap();
            }
        }
        drop(first);
        let mut second = connect(port);
        for i in 300..400 {
            writeln!(second, "{}", json(i)).unwrap();
        }
        writeln!(second, "{{\"card\":\"c2\",\"amount\":500}}").unwrap();
        writeln!(second).unwrap();
        drop(second);
    });
    let report = run(&dir, &config, "4s");
    sender.join().unwrap();
    assert_eq!(windows_in(&dir.join("windows.jsonl")), reference(0..400));
    let letters = letters_of(&dir, "payments");
    assert_eq!(letters.len(), 3, "{letters:?}");
    let source = format!("127.0.0.1:{port}");
    let expected = [
        (
            "conn 1 line 12",
            "field amount: expected f64, found \"lots\"",
        ),
        (
            "conn 1 line 23",
            "expected a JSON object with the schema's fields",
        ),
        (
            "conn 2 line 101",
            "event time field ts: expected a time, found NULL",
        ),
    ];
    for (letter, (position, reason)) in letters.iter().zip(expected) {
        assert_eq!(letter["source"], source.as_str(), "{letter}");
        assert_eq!(letter["position"], position, "{letter}");
        assert!(
            letter["reason"].as_str().unwrap().contains(reason),
            "{letter}"
        );
    }
    let app = &report["apps"][0];
    assert_eq!(app["dead_letters"], 3, "{app}");
    assert_eq!(app["events_in"], 403, "{app}");
    assert_eq!(app["events_out"], 400, "{app}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Publishes `payloads` to `subject` of the stream `name` (created here); their stream
/// sequences.
fn publish(url: &str, name: &str, subject: &str, payloads: &[String]) -> Vec<u64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let context = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        context
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let mut sequences = Vec::new();
        for payload in payloads {
            let ack = context
                .publish(subject.to_owned(), payload.clone().into())
                .await
                .unwrap();
            sequences.push(ack.await.unwrap().sequence);
        }
        sequences
    })
}

#[test]
fn typed_rows_over_nats_give_the_expected_windows_and_dead_letters() {
    let dir = folder("nats");
    let server = LocalServer::start().expect("nats-server must start (scripts/provision)");
    // 400 rows in order, a malformed payload, an empty one, and a row 5 s behind the
    // highest event time before it (the bound is 2 s): with `late = "dead-letter"`, a
    // dead letter.
    let mut payloads: Vec<String> = (0..200).map(json).collect();
    payloads.push("{\"card\":\"c3\",\"amount\":true,\"ts\":1}".into());
    payloads.extend((200..400).map(json));
    payloads.push(String::new());
    let (_, _, last) = payment(399);
    payloads.push(format!(
        "{{\"card\":\"c4\",\"amount\":999.5,\"ts\":{}}}",
        last - 5_000
    ));
    let sequences = publish(&server.url(), "PAYMENTS", "payments", &payloads);
    let config = dir.join("nats.toml");
    std::fs::write(
        &config,
        format!(
            "[report]\ndir = \"out\"\n\n[[app]]\nname = \"payments\"\n\n[app.source]\n\
             kind = \"nats\"\nformat = \"json\"\nout_of_orderness_ms = 2000\n\
             late = \"dead-letter\"\n{}\n[app.source.nats]\nurl = \"{}\"\n\
             stream = \"PAYMENTS\"\nsubject = \"payments\"\nconsumer = \"typed\"\n\
             create = true\nend_after_idle_ms = 500\n",
            PIPELINE,
            server.url()
        ),
    )
    .unwrap();
    let report = run(&dir, &config, "30s");
    assert_eq!(windows_in(&dir.join("windows.jsonl")), reference(0..400));
    let letters = letters_of(&dir, "payments");
    assert_eq!(letters.len(), 3, "{letters:?}");
    let at = |index: usize| format!("stream sequence {}", sequences[index]);
    let expected = [
        (at(200), "field amount: expected f64, found true".to_owned()),
        (
            at(401),
            "expected a record, found an empty message".to_owned(),
        ),
        (
            at(402),
            format!(
                "late: event time {} ms is behind the watermark, {} ms",
                last - 5_000,
                last - 2_000
            ),
        ),
    ];
    for (letter, (position, reason)) in letters.iter().zip(expected) {
        assert_eq!(letter["source"], "nats:PAYMENTS", "{letter}");
        assert_eq!(letter["position"], position.as_str(), "{letter}");
        assert!(
            letter["reason"].as_str().unwrap().contains(&reason),
            "{letter}"
        );
    }
    let app = &report["apps"][0];
    assert_eq!(app["dead_letters"], 3, "{app}");
    assert_eq!(app["events_in"], 403, "{app}");
    assert_eq!(app["events_out"], 400, "{app}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `dirigo validate` of `text` (written to `dir`): its exit code and standard error.
fn validate(dir: &Path, text: &str) -> (Option<i32>, String, PathBuf) {
    let config = dir.join("bad.toml");
    std::fs::write(&config, text).unwrap();
    let output = dirigo().arg("validate").arg(&config).output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        config,
    )
}

#[test]
fn an_inferred_schema_on_tcp_or_nats_and_a_servers_event_time_exit_2_where_they_are() {
    let dir = folder("errors");
    let tcp = "[[app]]\nname = \"a\"\n[app.source]\nkind = \"tcp\"\nlisten = \"127.0.0.1:9\"\n\
               format = \"json\"\nschema = \"infer\"\nevent_time = \"ts\"\n\
               [app.sink]\nkind = \"json-lines\"\npath = \"out.jsonl\"\n";
    let (code, stderr, config) = validate(&dir, tcp);
    assert_eq!(code, Some(2), "{stderr}");
    let at = format!("{}:7:10:", config.display());
    assert!(stderr.contains(&at), "{at} in {stderr}");
    assert!(
        stderr.contains("the fields and their types on a `tcp` source")
            && stderr.contains("a tcp source has no file"),
        "{stderr}"
    );
    let nats = "[[app]]\nname = \"a\"\n[app.source]\nkind = \"nats\"\nformat = \"json\"\n\
                schema = \"infer\"\nevent_time = \"ts\"\n[app.source.nats]\n\
                url = \"nats://127.0.0.1:4222\"\nstream = \"S\"\nconsumer = \"c\"\n\
                [app.sink]\nkind = \"json-lines\"\npath = \"out.jsonl\"\n";
    let (code, stderr, config) = validate(&dir, nats);
    assert_eq!(code, Some(2), "{stderr}");
    let at = format!("{}:6:10:", config.display());
    assert!(stderr.contains(&at), "{at} in {stderr}");
    assert!(stderr.contains("a nats source has no file"), "{stderr}");
    let published = nats
        .replace("schema = \"infer\"", "schema = { ts = \"timestamp_ms\" }")
        .replace(
            "consumer = \"c\"\n",
            "consumer = \"c\"\nevent_time = \"published\"\n",
        );
    let (code, stderr, config) = validate(&dir, &published);
    assert_eq!(code, Some(2), "{stderr}");
    let at = format!("{}:12:14:", config.display());
    assert!(stderr.contains(&at), "{at} in {stderr}");
    assert!(
        stderr.contains("no `event_time` in `[app.source.nats]` for typed rows"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rows the producer of the kill test publishes, at about 25 000 a second.
const KILL_ROWS: u64 = 100_000;
const KILL_BURST: u64 = 1_000;
const KILL_BURST_PAUSE: Duration = Duration::from_millis(40);
/// Kills, each at a random moment between these many ms after the run started.
const KILLS: u32 = 8;
const KILL_FROM_MS: u64 = 250;
const KILL_TO_MS: u64 = 1_200;

/// Row `i` of the kill test: its subject, key, value and event time. Each subject's
/// times never go back, except every 5th row of a subject (after the first 5 000 rows),
/// 100 ms behind: with a bound of 5 ms, late. So many that a checkpoint often stands
/// right before one, where a restored source must still know the highest time before
/// it.
fn keyed_row(i: u64) -> (String, u64, u64, u64) {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x2545_f491_4f6c_dd1d;
    x ^= x >> 29;
    let time = BASE_MS + i / 20;
    let late = i % 10 >= 8 && i > 5_000;
    (
        format!("in.{}", i % 2),
        x % 300,
        x % 1_000,
        if late { time - 100 } else { time },
    )
}

fn keyed_payload(i: u64) -> String {
    let (_, key, value, time) = keyed_row(i);
    format!("{{\"key\":{key},\"value\":{value},\"time\":{time}}}")
}

/// Whether row `i` is late: more than 5 ms behind the highest time before it on its
/// subject.
fn is_late(i: u64) -> bool {
    let (subject, _, _, time) = keyed_row(i);
    (0..i)
        .rev()
        .take(100)
        .map(keyed_row)
        .filter(|(s, ..)| *s == subject)
        .any(|(.., before)| time + 5 < before)
}

/// Publishes every row to the stream IN (made first), in bursts, each message with an
/// id so that a retry is stored once.
fn produce(url: String) -> std::thread::JoinHandle<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let context = runtime
        .block_on(async { async_nats::jetstream::new(async_nats::connect(&url).await.unwrap()) });
    runtime
        .block_on(
            context.create_stream(async_nats::jetstream::stream::Config {
                name: "IN".into(),
                subjects: vec!["in.*".into()],
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            }),
        )
        .unwrap();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            for burst in 0..KILL_ROWS / KILL_BURST {
                let mut acks = Vec::new();
                for i in burst * KILL_BURST..(burst + 1) * KILL_BURST {
                    let message = async_nats::jetstream::message::PublishMessage::build()
                        .message_id(format!("in-{i}"))
                        .payload(keyed_payload(i).into());
                    acks.push(context.send_publish(keyed_row(i).0, message).await.unwrap());
                }
                for ack in acks {
                    ack.await.expect("the server stores every row");
                }
                tokio::time::sleep(KILL_BURST_PAUSE).await;
            }
        })
    })
}

/// A small deterministic generator of kill delays.
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        KILL_FROM_MS + (self.0 >> 33) % (KILL_TO_MS - KILL_FROM_MS)
    }
}

#[test]
fn a_typed_nats_pipeline_killed_at_random_moments_writes_every_window_exactly_once() {
    let server = LocalServer::start().expect("nats-server must start (scripts/provision)");
    let dir = folder("kills");
    let config = format!(
        "[run]\nduration_s = 300\n[report]\ndir = \"out\"\nplots = false\nhgrm = false\n\
         [checkpoint]\ndir = \"state\"\ninterval = \"100ms\"\n\
         [[app]]\nname = \"sums\"\nparallelism = 2\n[app.source]\nkind = \"nats\"\n\
         format = \"json\"\npartitions = 2\nout_of_orderness_ms = 5\nlate = \"dead-letter\"\n\
         dead_letter_max_per_s = 1000000\n\
         schema = {{ key = \"u64\", value = \"u64\", time = \"timestamp_ms\" }}\n\
         event_time = \"time\"\n[app.source.nats]\nurl = \"{}\"\nstream = \"IN\"\n\
         subject = \"in.{{partition}}\"\nconsumer = \"sums\"\ncreate = true\n\
         end_after_idle_ms = 4000\n[[app.operator]]\nname = \"per-key\"\nkind = \"window\"\n\
         by = [\"key\"]\nwindow = {{ kind = \"tumbling\", size_ms = 50 }}\n\
         aggregates = {{ total = \"sum(value)\" }}\n[app.sink]\nkind = \"json-lines\"\n\
         path = \"sums.jsonl\"\n",
        server.url()
    );
    std::fs::write(dir.join("sums.toml"), config).unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dirigo"))
            .current_dir(&dir)
            .args(["run", "sums.toml"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let stderr_of = |child: &mut std::process::Child| {
        let mut text = String::new();
        use std::io::Read as _;
        let _ = child.stderr.take().unwrap().read_to_string(&mut text);
        text
    };
    let producer = produce(server.url());
    let mut delays = Delays(7);
    for _ in 0..KILLS {
        let mut child = spawn();
        let delay = Duration::from_millis(delays.next_ms());
        let since = Instant::now();
        while since.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "a run ended on its own while rows were still coming: {}",
            stderr_of(&mut child)
        );
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    producer.join().expect("the producer published everything");
    // The last run drains what is left and ends once no row came for a while.
    let mut last = spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = last.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the last run did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr_of(&mut last);
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("resuming from checkpoint"), "{stderr}");

    // Every window once, with the sum of its rows on time.
    let late: Vec<u64> = (0..KILL_ROWS).filter(|&i| is_late(i)).collect();
    assert!(
        late.len() > 10_000,
        "the input has late rows: {}",
        late.len()
    );
    let mut want: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for i in (0..KILL_ROWS).filter(|i| late.binary_search(i).is_err()) {
        let (_, key, value, time) = keyed_row(i);
        *want.entry((key, time - time % 50)).or_insert(0) += value;
    }
    let text = std::fs::read_to_string(dir.join("sums.jsonl")).unwrap();
    let mut got = BTreeMap::new();
    for line in text.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let window = (
            row["key"].as_u64().unwrap(),
            row["window_start"].as_u64().unwrap(),
        );
        assert!(
            got.insert(window, row["total"].as_u64().unwrap()).is_none(),
            "written twice: {line}"
        );
    }
    let missing = want.keys().filter(|k| !got.contains_key(k)).count();
    let wrong = want
        .iter()
        .filter(|(k, v)| got.get(k).is_some_and(|g| g != *v))
        .count();
    assert!(
        missing == 0 && wrong == 0 && got.len() == want.len(),
        "{} windows written for {} expected: {missing} missing, {wrong} wrong",
        got.len(),
        want.len()
    );
    // Every late row, and nothing else, is a dead letter (at least once: a resumed run
    // letters again what came after its checkpoint).
    let lettered: std::collections::BTreeSet<String> = letters_of(&dir, "sums")
        .iter()
        .map(|letter| {
            assert!(
                letter["reason"].as_str().unwrap().starts_with("late: "),
                "{letter}"
            );
            letter["record"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: std::collections::BTreeSet<String> =
        late.iter().map(|&i| keyed_payload(i)).collect();
    assert_eq!(lettered, expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two `tcp` sources of one app, each with its own listener, in one `union`: the windows
/// are those of every row sent to either, and the report sums both listeners.
#[test]
fn two_tcp_sources_of_one_app_meet_in_a_union() {
    let dir = folder("two-tcp");
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let schema = "schema = { card = \"string\", amount = \"f64\", ts = \"timestamp_ms\" }\n\
                  event_time = \"ts\"\nformat = \"json\"\nout_of_orderness_ms = 600000\n";
    let pipeline = PIPELINE
        .split_once("[[app.operator]]")
        .map(|(_, rest)| format!("[[app.operator]]{rest}"))
        .unwrap()
        .replacen(
            "kind = \"filter\"\n",
            "kind = \"filter\"\ninput = \"both\"\n",
            1,
        );
    let config = dir.join("two.toml");
    std::fs::write(
        &config,
        format!(
            "[report]\ndir = \"out\"\n\n[[app]]\nname = \"payments\"\n\n\
             [[app.source]]\nname = \"north\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:{}\"\n{schema}\n\
             [[app.source]]\nname = \"south\"\nkind = \"tcp\"\nlisten = \"127.0.0.1:{}\"\n{schema}\n\
             [[app.operator]]\nname = \"both\"\nkind = \"union\"\ninput = [\"north\", \"south\"]\n\n\
             {pipeline}",
            ports[0], ports[1]
        ),
    )
    .unwrap();
    let senders: Vec<_> = [(ports[0], 0..200), (ports[1], 200..400)]
        .into_iter()
        .map(|(port, rows)| {
            std::thread::spawn(move || {
                let mut stream = connect(port);
                for i in rows {
                    writeln!(stream, "{}", json(i)).unwrap();
                }
            })
        })
        .collect();
    let report = run(&dir, &config, "4s");
    for sender in senders {
        sender.join().unwrap();
    }
    assert_eq!(windows_in(&dir.join("windows.jsonl")), reference(0..400));
    let app = &report["apps"][0];
    assert_eq!(app["events_in"], 400, "{app}");
    assert_eq!(app["tcp"]["connections"], 2, "{app}");
    std::fs::remove_dir_all(&dir).unwrap();
}
