//! Typed rows from the TCP and NATS sources: their readers, bounds and guarantees as
//! for keyed records ([`crate::io::tcp`], [`crate::io::nats`]), with the row decoder of
//! the typed file source (`typed::decode`) as their decode step.
//!
//! Each line (or length-prefixed frame, or NATS message) is one row of the schema, JSON
//! or CSV, its event time read from one of its fields. A payload that is not a row is a
//! dead letter with the reason and its position: `conn N line M` (or `frame M`) on TCP,
//! `stream sequence N` on NATS. On TCP a connection may open with a CSV header naming
//! the schema's fields (then also their order); a NATS message is one record, never a
//! header. Late rows ([`LateRows`]) are decided by the source, in the order its
//! partition passes rows on: on TCP across every connection of the listener (the
//! connections are read on one thread and their rows reach the app in the order they
//! were decoded); on NATS per partition, and a checkpoint keeps each partition's highest
//! event time with its stream position, so that a restored run decides as the
//! uninterrupted one would.
//!
//! Guarantees, as for keyed records: a TCP source is at most once across a crash (a
//! socket cannot be read again); a NATS source with checkpoints is exactly once.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::decode::RowDecoder;
use super::schema::Schema;
use super::value::Row;
use crate::dataflow::{AppBuilder, Stream, Time};
use crate::io::late::{LateCheck, LateRows};
use crate::io::nats::{EventTime, NatsSourceHandle, NatsSourceOptions};
use crate::io::{DeadLetterSink, Format, Framing, TcpSourceHandle, TcpSourceOptions};

/// How a connector's payloads become typed rows.
#[derive(Clone, Debug)]
pub struct RowDecoding {
    /// The rows' fields.
    pub schema: Arc<Schema>,
    /// The field (a timestamp or an integer of milliseconds) that gives each row's
    /// event time.
    pub time_field: usize,
    /// How far watermarks trail the highest event time seen, ms.
    pub out_of_orderness: Time,
    /// What becomes of a row further behind than that.
    pub late: LateRows,
}

impl RowDecoding {
    fn late_check(&self) -> LateCheck {
        LateCheck::new(self.late, self.out_of_orderness)
    }
}

impl AppBuilder {
    /// A source of the typed rows sent to a listener bound at `listen`: the TCP source
    /// of [`source_tcp`](AppBuilder::source_tcp) (framing, token, connection limits,
    /// idle timeout, handle), each line or frame decoded per `rows` (see the
    /// [module docs](self)). Length-prefixed frames hold JSON.
    ///
    /// ```
    /// use std::io::Write;
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use dirigo_operators::dataflow::{AppBuilder, Msg};
    /// use dirigo_operators::io::{DeadLetterSink, Format, Framing, LateRows, TcpSourceOptions};
    /// use dirigo_operators::typed::connector::RowDecoding;
    /// use dirigo_operators::typed::{Schema, Type, Value};
    /// use dirigo_runtime::Runtime;
    ///
    /// let schema = Arc::new(Schema::new(vec![("card", Type::String), ("ts", Type::Timestamp)]));
    /// let rows = RowDecoding { schema, time_field: 1, out_of_orderness: 0, late: LateRows::Pass };
    /// let letters = DeadLetterSink::in_memory();
    /// let app = AppBuilder::new(0, "rows");
    /// let options = TcpSourceOptions::new(Framing::Lines(Format::Json)).max_connections(1);
    /// let listen = "127.0.0.1:0".parse().unwrap();
    /// let (stream, handle) = app.source_tcp_rows("in", listen, options, rows, letters.clone()).unwrap();
    /// let out = stream.collect("out");
    /// let app = app.build();
    /// let runtime = app.install(Runtime::<Msg>::builder().shards(1)).build().unwrap();
    /// app.start(&runtime.ingress());
    /// let mut peer = std::net::TcpStream::connect(handle.local_addr()).unwrap();
    /// peer.write_all(b"{\"card\":\"c1\",\"ts\":5}\n{\"card\":7,\"ts\":6}\n").unwrap();
    /// drop(peer);
    /// assert!(app.wait(Duration::from_secs(10)));
    /// assert_eq!(out.take(), vec![vec![Value::Str("c1".into()), Value::Timestamp(5)]]);
    /// assert!(letters.lines()[0].contains("conn 1 line 2"));
    /// runtime.shutdown();
    /// ```
    ///
    /// # Errors
    /// When the network thread cannot start or the address cannot be bound.
    pub fn source_tcp_rows(
        &self,
        name: &str,
        listen: SocketAddr,
        options: TcpSourceOptions,
        rows: RowDecoding,
        dead_letters: DeadLetterSink,
    ) -> io::Result<(Stream<Row>, TcpSourceHandle)> {
        let format = match options.framing {
            Framing::Lines(format) => format,
            Framing::LengthPrefixed => Format::Json,
        };
        let late = rows.late_check();
        // A connection may open with a CSV header.
        let decoder = RowDecoder::new(format, rows.schema, rows.time_field, true);
        self.source_tcp_decoded(
            name,
            listen,
            options,
            rows.out_of_orderness,
            (decoder, late),
            dead_letters,
        )
    }

    /// A source of the typed rows in a NATS JetStream stream: the NATS source of
    /// [`source_nats`](AppBuilder::source_nats) (partitions, durable consumers, bounded
    /// pulls, positions in checkpoints, acknowledgements after complete checkpoints),
    /// each message decoded in `options.format` per `rows` (see the
    /// [module docs](self)).
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// use dirigo_operators::dataflow::AppBuilder;
    /// use dirigo_operators::io::nats::{NatsConnect, NatsSourceOptions};
    /// use dirigo_operators::io::{DeadLetterSink, Format, LateRows};
    /// use dirigo_operators::typed::connector::RowDecoding;
    /// use dirigo_operators::typed::{Schema, Type};
    ///
    /// let schema = Arc::new(Schema::new(vec![("card", Type::String), ("ts", Type::Timestamp)]));
    /// let rows = RowDecoding { schema, time_field: 1, out_of_orderness: 0, late: LateRows::Pass };
    /// let mut options =
    ///     NatsSourceOptions::new(NatsConnect::new("nats://127.0.0.1:4222"), "PAYMENTS", "dirigo");
    /// options.format = Format::Json;
    /// let app = AppBuilder::new(0, "rows");
    /// let (payments, handle) =
    ///     app.source_nats_rows("in", options, rows, DeadLetterSink::in_memory()).unwrap();
    /// ```
    ///
    /// # Errors
    /// When the options ask for the server's time as event time (a typed row's comes
    /// from its field), or as [`source_nats`](AppBuilder::source_nats).
    pub fn source_nats_rows(
        &self,
        name: &str,
        options: NatsSourceOptions,
        rows: RowDecoding,
        dead_letters: DeadLetterSink,
    ) -> io::Result<(Stream<Row>, NatsSourceHandle)> {
        if options.event_time != EventTime::Field {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NATS source {name}: typed rows take their event time from the field {}, \
                     not from the server",
                    rows.schema.fields()[rows.time_field].name
                ),
            ));
        }
        let late = rows.late_check();
        // Each message is one record: no CSV header.
        let decoder = RowDecoder::new(options.format, rows.schema, rows.time_field, false);
        self.source_nats_decoded(
            name,
            options,
            rows.out_of_orderness,
            (decoder, late),
            dead_letters,
        )
    }
}
