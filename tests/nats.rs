//! The NATS source and sink against a real `nats-server` (each test starts its own, on a
//! free loopback port, and fails when none starts): good and malformed records from one
//! stream to another, with every count adding up; a broker restart mid-run that loses
//! nothing; clear errors for a missing stream or consumer; credentials that work and are
//! never shown.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use dirigo_operators::dataflow::{App, AppBuilder, Msg};
use dirigo_operators::io::nats::{
    Credentials, LocalServer, NatsConnect, NatsSinkOptions, NatsSourceOptions, Secret,
    SubjectTemplate,
};
use dirigo_operators::io::{DeadLetterSink, Format, KeyedRecord};
use dirigo_runtime::Runtime;
use futures_lite::StreamExt;

fn server() -> LocalServer {
    LocalServer::start().expect("nats-server must start (scripts/provision installs it)")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn context(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.expect("the test connects"))
}

fn json(record: &KeyedRecord) -> String {
    format!(
        "{{\"key\":{},\"value\":{},\"time\":{}}}",
        record.key, record.value, record.time
    )
}

/// Publishes `payload` to `subject` until the server acknowledges it (through a broker
/// restart), with `id` so that a retry is not stored twice; returns its sequence.
async fn publish(
    context: &jetstream::Context,
    subject: String,
    payload: String,
    id: String,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = context
            .send_publish(
                subject.clone(),
                jetstream::message::PublishMessage::build()
                    .message_id(&id)
                    .payload(payload.clone().into()),
            )
            .await;
        if let Ok(ack) = sent {
            if let Ok(ack) = ack.await {
                return ack.sequence;
            }
        }
        assert!(Instant::now() < deadline, "the test could not publish {id}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message in `stream`, as (subject, payload), in stream order.
async fn read_all(context: &jetstream::Context, name: &str) -> Vec<(String, String)> {
    let mut stream = context
        .get_stream(name)
        .await
        .expect("the output stream exists");
    let count = stream.info().await.unwrap().state.messages as usize;
    let consumer = stream
        .create_consumer(pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::new();
    while out.len() < count {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the output stream gives its messages")
            .unwrap()
            .unwrap();
        out.push((
            message.subject.to_string(),
            String::from_utf8(message.payload.to_vec()).unwrap(),
        ));
    }
    out
}

/// Runs `app` on a 2-shard runtime until it is done (its sources end when idle).
fn run(app: &App, timeout: Duration) {
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .expect("the runtime starts");
    app.start(&runtime.ingress());
    assert!(app.wait(timeout), "the app did not finish");
    runtime.shutdown();
}

/// A source → map → sink app between the streams `IN` (`in.0`, `in.1`) and `OUT`.
fn pipeline(url: &str, letters: &DeadLetterSink, idle: Duration) -> App {
    let builder = AppBuilder::new(0, "relay");
    let mut source = NatsSourceOptions::new(NatsConnect::new(url), "IN", "relay");
    source.subject = Some("in.{partition}".into());
    source.partitions = 2;
    source.format = Format::Json;
    source.create = true;
    source.end_after_idle = Some(idle);
    let (records, _handle) = builder
        .source_nats(
            "source",
            source,
            0,
            |record: &KeyedRecord| record.time,
            letters.clone(),
        )
        .expect("the source starts");
    let mut sink = NatsSinkOptions::new(
        NatsConnect::new(url),
        "OUT",
        SubjectTemplate::parse("out.{key}").unwrap(),
    );
    sink.create = true;
    records
        .map("double", |r: KeyedRecord| KeyedRecord {
            value: r.value * 2,
            ..r
        })
        .sink_nats("sink", sink)
        .expect("the sink starts");
    builder.build()
}

#[test]
fn good_and_malformed_records_go_from_stream_to_stream() {
    let server = server();
    let rt = runtime();
    let url = server.url();
    // The input stream is made by the source (create = true): publish after the app
    // has been built.
    let letters = DeadLetterSink::in_memory();
    let app = pipeline(&url, &letters, Duration::from_secs(2));
    let good: Vec<KeyedRecord> = (0..2000)
        .map(|k| KeyedRecord {
            key: k,
            value: k % 97,
            time: k,
        })
        .collect();
    let bad_sequences = rt.block_on(async {
        let context = context(&url).await;
        let mut bad = Vec::new();
        for (index, record) in good.iter().enumerate() {
            let subject = format!("in.{}", record.key % 2);
            publish(&context, subject.clone(), json(record), format!("g{index}")).await;
            if index % 100 == 7 {
                let payload = [
                    "{\"key\":1",
                    "not json",
                    "",
                    "{\"key\":\"x\",\"value\":1,\"time\":1}",
                ][bad.len() % 4];
                bad.push(publish(&context, subject, payload.to_owned(), format!("b{index}")).await);
            }
        }
        bad
    });
    run(&app, Duration::from_secs(60));
    let out = rt.block_on(async { read_all(&context(&url).await, "OUT").await });
    let mut seen = BTreeMap::new();
    for (subject, payload) in &out {
        let record: KeyedRecord = serde_json::from_str(payload).unwrap();
        assert_eq!(subject, &format!("out.{}", record.key));
        *seen.entry(record.key).or_insert(0) += 1;
        assert_eq!(record.value, (record.key % 97) * 2);
    }
    assert_eq!(out.len(), good.len(), "every good record arrives once");
    assert_eq!(seen.len(), good.len());
    assert_eq!(
        letters.count(),
        bad_sequences.len() as u64,
        "{:#?}",
        letters.lines()
    );
    let lines = letters.lines();
    for sequence in &bad_sequences {
        let position = format!("\"position\":\"stream sequence {sequence}\"");
        assert!(
            lines
                .iter()
                .any(|line| line.contains(&position) && line.contains("nats:IN")),
            "no letter at sequence {sequence}: {lines:#?}"
        );
    }
    let flow = app.flow();
    assert_eq!(flow.outputs_written, good.len() as u64);
    assert_eq!(flow.outputs_failed, 0);
}

#[test]
fn a_broker_restart_mid_run_loses_nothing() {
    let mut server = server();
    let rt = runtime();
    let url = server.url();
    let letters = DeadLetterSink::in_memory();
    let app = pipeline(&url, &letters, Duration::from_secs(4));
    let runtime = app
        .install(Runtime::<Msg>::builder().shards(2))
        .build()
        .expect("the runtime starts");
    app.start(&runtime.ingress());
    let total = 6000u64;
    // A producer that paces its records over about 3 s and rides out the restart.
    let producer_url = url.clone();
    let producer = std::thread::spawn(move || {
        runtime_for_thread().block_on(async move {
            let context = context(&producer_url).await;
            for key in 0..total {
                let record = KeyedRecord {
                    key,
                    value: key % 97,
                    time: key,
                };
                publish(
                    &context,
                    format!("in.{}", key % 2),
                    json(&record),
                    format!("r{key}"),
                )
                .await;
                if key % 200 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    });
    std::thread::sleep(Duration::from_millis(1200));
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
    server
        .restart()
        .expect("the server starts again on its store");
    producer.join().expect("the producer published everything");
    assert!(app.wait(Duration::from_secs(90)), "the app did not finish");
    runtime.shutdown();
    let out = rt.block_on(async { read_all(&context(&url).await, "OUT").await });
    let mut keys: Vec<u64> = out
        .iter()
        .map(|(_, payload)| serde_json::from_str::<KeyedRecord>(payload).unwrap().key)
        .collect();
    keys.sort_unstable();
    let before = keys.len();
    keys.dedup();
    let missing: Vec<u64> = (0..total)
        .filter(|k| keys.binary_search(k).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} records never came out, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    assert_eq!(before, keys.len(), "each came out once");
    assert_eq!(letters.count(), 0);
    assert_eq!(app.flow().outputs_failed, 0);
}

fn runtime_for_thread() -> tokio::runtime::Runtime {
    runtime()
}

#[test]
fn a_missing_stream_or_consumer_is_a_clear_error_at_start() {
    let server = server();
    let url = server.url();
    let builder = AppBuilder::new(0, "missing");
    let options = NatsSourceOptions::new(NatsConnect::new(&url), "NOPE", "reader");
    let error = builder
        .source_nats(
            "source",
            options,
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .err()
        .expect("a missing stream is an error");
    assert!(
        error.to_string().contains("\"NOPE\" does not exist"),
        "{error}"
    );
    runtime().block_on(async {
        context(&url)
            .await
            .create_stream(stream::Config {
                name: "THERE".into(),
                subjects: vec!["there".into()],
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let options = NatsSourceOptions::new(NatsConnect::new(&url), "THERE", "reader");
    let error = builder
        .source_nats(
            "source",
            options,
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .err()
        .expect("a missing consumer is an error");
    assert!(
        error.to_string().contains("no consumer \"reader\""),
        "{error}"
    );
    let records = builder.source_iter(
        "numbers",
        vec![(
            1,
            KeyedRecord {
                key: 1,
                value: 1,
                time: 1,
            },
        )],
        0,
        dirigo_operators::source::Pacing::Unpaced,
    );
    let error = records
        .sink_nats(
            "sink",
            NatsSinkOptions::new(
                NatsConnect::new(&url),
                "ALSO_NOPE",
                SubjectTemplate::parse("x").unwrap(),
            ),
        )
        .expect_err("a sink's missing stream is an error");
    assert!(
        error.to_string().contains("\"ALSO_NOPE\" does not exist"),
        "{error}"
    );
    // No server at all: the error names the address.
    let closed = format!("nats://127.0.0.1:{}", free_port());
    let error = builder
        .source_nats(
            "source",
            NatsSourceOptions::new(NatsConnect::new(&closed), "IN", "c"),
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .err()
        .expect("no server is an error");
    assert!(error.to_string().contains("cannot connect"), "{error}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn credentials_work_and_never_show() {
    let token = "t0ken-that-must-not-show";
    let server = LocalServer::start_with(&["--auth", token]).expect("nats-server must start");
    let url = server.url();
    let builder = AppBuilder::new(0, "secure");
    let mut options = NatsSourceOptions::new(
        NatsConnect::new(&url).credentials(Credentials::Token(Secret::new("wrong-guess"))),
        "S",
        "c",
    );
    options.subject = Some("s".into());
    options.create = true;
    let error = builder
        .source_nats(
            "source",
            options.clone(),
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .err()
        .expect("a wrong token is refused");
    let shown = format!("{error} {options:?}");
    assert!(!shown.contains("wrong-guess"), "{shown}");
    options.connect = NatsConnect::new(&url).credentials(Credentials::Token(Secret::new(token)));
    assert!(!format!("{options:?}").contains(token));
    builder
        .source_nats(
            "source",
            options,
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .expect("the right token is let in");
    // A token in the URL is not shown in errors either.
    let in_url = format!("nats://wrong-in-url@{}", server.addr());
    let error = builder
        .source_nats(
            "source",
            NatsSourceOptions::new(NatsConnect::new(&in_url), "MISSING", "c"),
            0,
            |r: &KeyedRecord| r.time,
            DeadLetterSink::in_memory(),
        )
        .err()
        .expect("a wrong token is refused");
    assert!(error.to_string().contains("cannot connect"), "{error}");
    assert!(!error.to_string().contains("wrong-in-url"), "{error}");
}
