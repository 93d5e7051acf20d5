//! TCP sources and sinks: records read from connections to a listener, with malformed
//! records sent to dead letters while the pipeline goes on; and records written to a
//! TCP peer as JSON lines.
//!
//! # The source
//!
//! [`AppBuilder::source_tcp`] binds its listener when the app is built (so the address,
//! with the port the OS picked for port 0, is known at once: [`TcpSourceHandle::local_addr`])
//! and serves it from a dedicated thread that runs a glommio `LocalExecutor` (placement
//! `Unbound`: the thread is not pinned, and the OS runs it where it finds room; it
//! sleeps in the reactor while no bytes come). The thread accepts
//! connections and runs one task per connection that reads chunks of up to
//! [`READ_BYTES`], frames them ([`Framing`]), decodes the records, and hands each chunk's
//! records, as one batch, to the app over a bounded channel of [`CHANNEL_BATCHES`]
//! batches. When the app falls behind, the channel fills, the tasks stop reading, and
//! TCP flow control pushes back on the peers.
//!
//! The app side is one source partition whose [`RecordSource`] takes from that channel
//! without blocking: when nothing is there it answers `Pending`, and the partition looks
//! again after a short pause (see [`crate::source`]). Event times come from `time_of`,
//! watermarks trail the highest seen by the out-of-orderness bound. Records from one
//! connection keep their order; records of different connections interleave.
//!
//! Framing ([`Framing`]):
//! - [`Framing::Lines`]: records end at `\n` (a `\r` before it is dropped), each decoded
//!   as CSV or JSON per the given [`Format`]; blank lines are skipped, and so is a CSV
//!   header `key,value,time` as the first non-blank line of a connection. A line longer
//!   than the maximum frame is skipped up to its end and dead-lettered.
//! - [`Framing::LengthPrefixed`]: a 4-byte big-endian length, then that many bytes of
//!   payload, decoded as one JSON record. A length over the maximum frame is fatal for
//!   that connection (nothing marks where the next frame starts): it is dead-lettered and
//!   the connection is closed. So is an empty payload, and a stream that ends inside a
//!   frame (a truncated frame).
//!
//! Every malformed record is recorded in the source's [`DeadLetterSink`], with the bound
//! address as its source, `conn N line M` or `conn N frame M` as its position (both
//! 1-based; connections numbered in the order they were accepted) and the parse error as
//! its reason, and the connection goes on. So is a record whose event time (from
//! `time_of`) lies outside `0..=`[`MAX_EVENT_TIME_MS`] (the end of year 9999, in ms; see
//! [`check_event_time`]): no record a peer sends can end the stream.
//!
//! The stream ends ([`Msg::End`], a message of its own) when the listener is done and
//! every accepted connection has been read to its end (its peer closed it, or it
//! failed):
//! - after [`TcpSourceOptions::max_connections`] connections, when set: the listener
//!   accepts no more;
//! - or when [`TcpSourceHandle::close`] is called: the listener is closed at once
//!   (connections the OS queued but the source had not accepted yet are refused), and the
//!   connections already accepted are read to their end.
//!
//! Dropping the handle does not end the stream: without `max_connections`, keep the
//! handle to end it.
//!
//! [`MAX_EVENT_TIME_MS`]: crate::dataflow::MAX_EVENT_TIME_MS
//!
//! # The sink
//!
//! [`Stream::sink_tcp`] connects to its peer when the app is built (with `std::net`) and
//! writes every record as one JSON line. Each sink partition buffers its lines and writes
//! them when the buffer passes 64 KiB and at every watermark, under a lock on the shared
//! connection. These are blocking writes on the sink's shard: a slow peer stalls that
//! shard, and whatever else runs on it. When every sink partition has seen the end of its
//! input, the connection's write half is shut down, so the peer reads to its end. A write
//! error is logged once; from then on the sink's output is dropped.

use std::any::Any;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use dirigo_runtime::{Context, StateKind};
use futures_lite::AsyncReadExt;

use super::file::{decode_text_line, DeadLetterSink, Line, TimeOf};
use super::parse::{decode_line, Decode, Format, LengthFramer, LineFramer, DEFAULT_MAX_FRAME};
use crate::dataflow::{
    add_operator, check_event_time, partitions_of_self, AppBuilder, AppCounters, Batch, Data,
    Logic, Msg, Stream, Time, Wiring,
};
use crate::partition::Partitioning;
use crate::source::{Pacing, RecordSource};

/// Most bytes a connection reads at a time.
pub const READ_BYTES: usize = 64 * 1024;

/// How many batches (one per chunk read) wait between the network thread and the app.
pub const CHANNEL_BATCHES: usize = 256;

/// I/O memory of the network thread's executor (it registers no buffers of its own).
const IO_MEMORY: usize = 256 * 1024;

/// How a TCP source splits a connection's bytes into records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// One record per line, in this format (CSV fields or a JSON object).
    Lines(Format),
    /// A 4-byte big-endian payload length, then the payload: one JSON object.
    LengthPrefixed,
}

/// A TCP source's options: its framing, the longest line or frame, and when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSourceOptions {
    /// How records are framed.
    pub framing: Framing,
    /// The longest line or frame payload accepted, in bytes (default
    /// [`DEFAULT_MAX_FRAME`]).
    pub max_frame: usize,
    /// End the stream after this many connections have been accepted and read to their
    /// end; `None` (the default): only [`TcpSourceHandle::close`] ends it.
    pub max_connections: Option<u64>,
}

impl TcpSourceOptions {
    /// `framing`, with the default maximum frame and no connection limit.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: None,
        }
    }

    /// With the longest line or frame payload accepted set to `bytes`.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Ending the stream after `connections` connections.
    pub fn max_connections(mut self, connections: u64) -> Self {
        self.max_connections = Some(connections);
        self
    }
}

impl From<Framing> for TcpSourceOptions {
    fn from(framing: Framing) -> Self {
        Self::new(framing)
    }
}

/// Counters of a TCP source's network thread.
#[derive(Debug, Default)]
struct TcpStats {
    accepted: AtomicU64,
    closed: AtomicU64,
    records: AtomicU64,
    finished: AtomicBool,
}

/// The handle on a running TCP source: its address, its counters, and how to end it.
#[derive(Clone, Debug)]
pub struct TcpSourceHandle {
    local_addr: SocketAddr,
    close: flume::Sender<()>,
    stats: Arc<TcpStats>,
}

impl TcpSourceHandle {
    /// The address the listener is bound to (with the actual port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections; the stream ends once the connections already
    /// accepted have been read to their end (see the [module docs](self)). Idempotent.
    pub fn close(&self) {
        let _ = self.close.try_send(());
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Acquire)
    }

    /// Connections read to their end so far.
    pub fn connections_closed(&self) -> u64 {
        self.stats.closed.load(Ordering::Acquire)
    }

    /// Records decoded and handed towards the app so far.
    pub fn records(&self) -> u64 {
        self.stats.records.load(Ordering::Acquire)
    }

    /// Whether the network side is done: no more records will come.
    pub fn is_finished(&self) -> bool {
        self.stats.finished.load(Ordering::Acquire)
    }
}

/// Decodes one connection's bytes: framing, decoding, dead letters.
struct ConnDecoder<T> {
    /// The source of dead letters (the listener's address).
    source: Arc<str>,
    /// The connection's number.
    conn: u64,
    framer: Framer,
    /// Lines or frames framed so far.
    number: u64,
    /// Whether a non-blank line has been seen (a CSV header is allowed before).
    seen_content: bool,
    /// Whether the stream failed (length-prefixed only): read no more.
    failed: bool,
    letters: DeadLetterSink,
    time_of: TimeOf<T>,
    /// Records decoded, not yet handed over.
    records: Batch<T>,
}

enum Framer {
    Lines {
        framer: LineFramer,
        format: Format,
        out: Vec<Result<Vec<u8>, String>>,
    },
    Frames {
        framer: LengthFramer,
        out: Vec<Vec<u8>>,
    },
}

impl<T: Decode> ConnDecoder<T> {
    fn new(
        source: Arc<str>,
        conn: u64,
        options: &TcpSourceOptions,
        letters: DeadLetterSink,
        time_of: TimeOf<T>,
    ) -> Self {
        let framer = match options.framing {
            Framing::Lines(format) => Framer::Lines {
                framer: LineFramer::with_max_line(options.max_frame),
                format,
                out: Vec::new(),
            },
            Framing::LengthPrefixed => Framer::Frames {
                framer: LengthFramer::with_max_frame(options.max_frame),
                out: Vec::new(),
            },
        };
        Self {
            source,
            conn,
            framer,
            number: 0,
            seen_content: false,
            failed: false,
            letters,
            time_of,
            records: Vec::new(),
        }
    }

    fn letter(&self, unit: &str, number: u64, reason: &str, record: &[u8]) {
        let position = format!("conn {} {unit} {number}", self.conn);
        self.letters.record(&self.source, &position, reason, record);
    }

    /// Decodes what `chunk` completes; `false` when the connection should be closed.
    fn push(&mut self, chunk: &[u8]) -> bool {
        let mut framer = std::mem::replace(&mut self.framer, Framer::placeholder());
        match &mut framer {
            Framer::Lines {
                framer,
                format,
                out,
            } => {
                framer.push(chunk, out);
                self.lines(out, *format);
            }
            Framer::Frames { framer, out } => {
                let pushed = framer.push(chunk, out);
                self.frames(out);
                if let Err(reason) = pushed {
                    self.failed = true;
                    self.letter("frame", self.number + 1, &reason, b"");
                }
            }
        }
        self.framer = framer;
        !self.failed
    }

    /// At the end of the connection: decodes a last line without `\n`, or reports a
    /// truncated frame.
    fn finish(&mut self) {
        let mut framer = std::mem::replace(&mut self.framer, Framer::placeholder());
        match &mut framer {
            Framer::Lines {
                framer,
                format,
                out,
            } => {
                framer.finish(out);
                self.lines(out, *format);
            }
            Framer::Frames { framer, .. } => {
                // After a fatal length the error was reported already.
                if let (Err(reason), false) = (framer.finish(), self.failed) {
                    self.letter("frame", self.number + 1, &reason, b"");
                }
            }
        }
        self.framer = framer;
    }

    fn lines(&mut self, out: &mut Vec<Result<Vec<u8>, String>>, format: Format) {
        for line in out.drain(..) {
            self.number += 1;
            match line {
                Ok(bytes) => match decode_text_line::<T>(&bytes, format, !self.seen_content) {
                    Line::Record(record) => {
                        self.seen_content = true;
                        match check_event_time((self.time_of)(&record)) {
                            Ok(time) => self.records.push((time, record)),
                            Err(reason) => self.letter("line", self.number, &reason, &bytes),
                        }
                    }
                    Line::Skipped => {
                        self.seen_content |= !bytes.iter().all(u8::is_ascii_whitespace);
                    }
                    Line::Bad(reason) => {
                        self.seen_content = true;
                        self.letter("line", self.number, &reason, &bytes);
                    }
                },
                Err(reason) => {
                    self.seen_content = true;
                    self.letter("line", self.number, &reason, b"");
                }
            }
        }
    }

    fn frames(&mut self, out: &mut Vec<Vec<u8>>) {
        for payload in out.drain(..) {
            self.number += 1;
            let decoded = if payload.is_empty() {
                Err("expected a JSON record, found an empty frame".to_owned())
            } else {
                decode_line::<T>(&payload, Format::Json).and_then(|record| {
                    check_event_time((self.time_of)(&record)).map(|time| (time, record))
                })
            };
            match decoded {
                Ok(timed) => self.records.push(timed),
                Err(reason) => self.letter("frame", self.number, &reason, &payload),
            }
        }
    }
}

impl Framer {
    /// Stands in while the real framer is borrowed out.
    fn placeholder() -> Self {
        Framer::Frames {
            framer: LengthFramer::with_max_frame(0),
            out: Vec::new(),
        }
    }
}

/// What the network thread's tasks share.
struct Network<T> {
    source: Arc<str>,
    options: TcpSourceOptions,
    letters: DeadLetterSink,
    time_of: TimeOf<T>,
    records: flume::Sender<Batch<T>>,
    stats: Arc<TcpStats>,
}

impl<T: Decode + Data> Network<T> {
    /// Hands `records` to the app, waiting for room; `false` when the app is gone.
    async fn hand_over(&self, records: &mut Batch<T>) -> bool {
        if records.is_empty() {
            return true;
        }
        let batch = std::mem::take(records);
        let count = batch.len() as u64;
        if self.records.send_async(batch).await.is_err() {
            return false;
        }
        self.stats.records.fetch_add(count, Ordering::AcqRel);
        true
    }

    /// Reads one connection to its end.
    async fn read_connection(&self, mut stream: glommio::net::TcpStream, conn: u64) {
        let mut decoder = ConnDecoder::new(
            self.source.clone(),
            conn,
            &self.options,
            self.letters.clone(),
            self.time_of.clone(),
        );
        let mut buf = vec![0; READ_BYTES];
        loop {
            let read = match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(source = %self.source, conn, error = %e, "TCP source: read failed; closing the connection");
                    break;
                }
            };
            let go_on = decoder.push(&buf[..read]);
            if !self.hand_over(&mut decoder.records).await {
                return;
            }
            if !go_on {
                break;
            }
        }
        decoder.finish();
        self.hand_over(&mut decoder.records).await;
    }
}

/// Accepts connections until the limit or `close`, then waits for the open ones.
async fn serve<T: Decode + Data>(
    listener: glommio::net::TcpListener,
    network: Rc<Network<T>>,
    close: flume::Receiver<()>,
) {
    let (done_tx, done_rx) = flume::unbounded::<()>();
    let mut open = 0u64;
    let mut accepted = 0u64;
    let limit = network.options.max_connections.unwrap_or(u64::MAX);
    while accepted < limit {
        let next = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            match close.recv_async().await {
                Ok(()) => None,
                // The handle is gone: only the connection limit ends the stream.
                Err(_) => futures_lite::future::pending().await,
            }
        })
        .await;
        let stream = match next {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                tracing::warn!(source = %network.source, error = %e, "TCP source: accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        accepted += 1;
        open += 1;
        network.stats.accepted.store(accepted, Ordering::Release);
        let network = network.clone();
        let done = done_tx.clone();
        glommio::spawn_local(async move {
            network.read_connection(stream, accepted).await;
            network.stats.closed.fetch_add(1, Ordering::AcqRel);
            let _ = done.send(());
        })
        .detach();
    }
    drop(listener);
    while open > 0 {
        let _ = done_rx.recv_async().await;
        open -= 1;
    }
}

/// One incarnation of the TCP source partition: takes batches from the network thread.
struct ChannelRecords<T> {
    batches: flume::Receiver<Batch<T>>,
    batch: std::vec::IntoIter<(Time, T)>,
}

impl<T: Data> RecordSource<T> for ChannelRecords<T> {
    /// Blocks until a record comes (the source partition uses `poll_record` instead).
    fn next_record(&mut self) -> Option<(Time, T)> {
        loop {
            if let Some(record) = self.batch.next() {
                return Some(record);
            }
            self.batch = self.batches.recv().ok()?.into_iter();
        }
    }

    fn poll_record(&mut self) -> Poll<Option<(Time, T)>> {
        loop {
            if let Some(record) = self.batch.next() {
                return Poll::Ready(Some(record));
            }
            match self.batches.try_recv() {
                Ok(batch) => self.batch = batch.into_iter(),
                Err(flume::TryRecvError::Empty) => return Poll::Pending,
                Err(flume::TryRecvError::Disconnected) => return Poll::Ready(None),
            }
        }
    }
}

impl AppBuilder {
    /// A source of the records sent to a listener bound at `listen`, framed and decoded
    /// per `options` (a [`Framing`] or [`TcpSourceOptions`]), read by one partition (see
    /// the [module docs](self)). Malformed records go to `dead_letters` with their
    /// position (`conn N line M` or `conn N frame M`) and the parse error; `time_of`
    /// gives each record's event time, and watermarks trail the highest one seen by
    /// `out_of_orderness` ms. The handle tells the bound address and ends the stream.
    ///
    /// The listener is served from a thread of its own, started here: connections are
    /// accepted (and their records queued, up to [`CHANNEL_BATCHES`] chunks) even before
    /// the app starts.
    ///
    /// # Errors
    /// When the network thread or its executor cannot start, or the address cannot be
    /// bound.
    pub fn source_tcp<T: Decode + Data>(
        &self,
        name: &str,
        listen: SocketAddr,
        options: impl Into<TcpSourceOptions>,
        out_of_orderness: Time,
        time_of: impl Fn(&T) -> Time + Send + Sync + 'static,
        dead_letters: DeadLetterSink,
    ) -> io::Result<(Stream<T>, TcpSourceHandle)> {
        let options = options.into();
        let (records_tx, records_rx) = flume::bounded::<Batch<T>>(CHANNEL_BATCHES);
        let (close_tx, close_rx) = flume::bounded::<()>(1);
        let (ready_tx, ready_rx) = flume::bounded::<io::Result<SocketAddr>>(1);
        let stats = Arc::new(TcpStats::default());
        let thread_stats = stats.clone();
        let time_of: TimeOf<T> = Arc::new(time_of);
        std::thread::Builder::new()
            .name(format!("dirigo-tcp-{name}"))
            .spawn(move || {
                let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                    .name("dirigo-tcp")
                    .io_memory(IO_MEMORY)
                    .make();
                let executor = match executor {
                    Ok(executor) => executor,
                    Err(e) => {
                        let _ = ready_tx.send(Err(io::Error::from(e)));
                        thread_stats.finished.store(true, Ordering::Release);
                        return;
                    }
                };
                let network_stats = thread_stats.clone();
                executor.run(async move {
                    let bound = glommio::net::TcpListener::bind(listen)
                        .map_err(io::Error::from)
                        .and_then(|listener| Ok((listener.local_addr()?, listener)));
                    let (addr, listener) = match bound {
                        Ok(bound) => bound,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(addr));
                    let network = Rc::new(Network {
                        source: Arc::from(addr.to_string()),
                        options,
                        letters: dead_letters,
                        time_of,
                        records: records_tx,
                        stats: network_stats,
                    });
                    serve(listener, network, close_rx).await;
                });
                // The sender is dropped with the network: the stream ends.
                thread_stats.finished.store(true, Ordering::Release);
            })?;
        let local_addr = ready_rx
            .recv()
            .map_err(|_| io::Error::other("the TCP source's thread ended before binding"))?
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("TCP source {name}: cannot listen on {listen}: {e}"),
                )
            })?;
        let stream = self
            .source(name, out_of_orderness, Pacing::Unpaced, move |_, _| {
                ChannelRecords {
                    batches: records_rx.clone(),
                    batch: Vec::new().into_iter(),
                }
            })
            .set_parallelism(1);
        let handle = TcpSourceHandle {
            local_addr,
            close: close_tx,
            stats,
        };
        Ok((stream, handle))
    }
}

/// The connection a TCP sink's partitions share.
struct TcpSinkShared {
    stream: Mutex<std::net::TcpStream>,
    peer: SocketAddr,
    /// A write failed: output is dropped from then on.
    broken: AtomicBool,
    /// Sink partitions that have seen the end of their input.
    finished: AtomicU32,
}

impl TcpSinkShared {
    fn write(&self, bytes: &[u8]) {
        if bytes.is_empty() || self.broken.load(Ordering::Acquire) {
            return;
        }
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = stream.write_all(bytes) {
            if !self.broken.swap(true, Ordering::AcqRel) {
                tracing::warn!(peer = %self.peer, error = %e, "TCP sink: write failed; dropping its output from now on");
            }
        }
    }

    fn shutdown(&self) {
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// One TCP sink partition.
struct TcpSinkLogic<T> {
    shared: Arc<TcpSinkShared>,
    buffer: Vec<u8>,
    partitions: u32,
    counters: Arc<AppCounters>,
    _records: PhantomData<fn(T)>,
}

/// A partition writes its lines once it holds this many bytes (and at every watermark).
const SINK_BUFFER: usize = 64 * 1024;

impl<T: Data + serde::Serialize> Logic for TcpSinkLogic<T> {
    fn on_data(&mut self, _: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = data
            .downcast::<Batch<T>>()
            .expect("an edge carries its upstream operator's record type");
        for (_, record) in *batch {
            if serde_json::to_writer(&mut self.buffer, &record).is_ok() {
                self.buffer.push(b'\n');
            }
            if self.buffer.len() >= SINK_BUFFER {
                self.shared.write(&self.buffer);
                self.buffer.clear();
            }
        }
    }

    fn on_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {
        self.shared.write(&self.buffer);
        self.buffer.clear();
    }

    fn forward_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    fn on_end(&mut self, _: &mut Context<'_, Msg>) {
        self.shared.write(&self.buffer);
        self.buffer.clear();
        if self.shared.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.partitions {
            self.shared.shutdown();
        }
        self.counters.sink_finished();
    }

    fn forward_end(&mut self, _: &mut Context<'_, Msg>) {}
}

impl<T: Data + serde::Serialize> Stream<T> {
    /// Writes every record as one JSON line to a TCP connection to `connect_to`, opened
    /// here (see the [module docs](self): writes block the sink's shard).
    ///
    /// # Errors
    /// When the connection cannot be opened.
    pub fn sink_tcp(&self, name: &str, connect_to: SocketAddr) -> io::Result<()> {
        let stream = std::net::TcpStream::connect(connect_to).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("TCP sink {name}: cannot connect to {connect_to}: {e}"),
            )
        })?;
        stream.set_nodelay(true)?;
        let shared = Arc::new(TcpSinkShared {
            stream: Mutex::new(stream),
            peer: connect_to,
            broken: AtomicBool::new(false),
            finished: AtomicU32::new(0),
        });
        let node = add_operator(
            self.graph(),
            name,
            StateKind::Exclusive,
            Arc::new(move |wiring: &Wiring, partition| {
                Box::new(TcpSinkLogic::<T> {
                    shared: shared.clone(),
                    buffer: Vec::new(),
                    partitions: partitions_of_self(wiring, partition),
                    counters: wiring.counters.clone(),
                    _records: PhantomData,
                }) as Box<dyn Logic>
            }),
        );
        self.connect(node, Partitioning::Forward, None);
        self.mark_sink(node);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::KeyedRecord;

    fn decoder(options: TcpSourceOptions, letters: &DeadLetterSink) -> ConnDecoder<KeyedRecord> {
        ConnDecoder::new(
            Arc::from("here"),
            3,
            &options,
            letters.clone(),
            Arc::new(|r: &KeyedRecord| r.time),
        )
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn lines_split_anywhere() {
        let letters = DeadLetterSink::in_memory();
        let mut d = decoder(
            TcpSourceOptions::new(Framing::Lines(Format::Csv)).max_frame(16),
            &letters,
        );
        let text = b"key,value,time\n1,2,3\n1,x,3\n0123456789abcdefghij\n4,5,6";
        for byte in text.chunks(3) {
            assert!(d.push(byte));
        }
        d.finish();
        assert_eq!(
            d.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![3, 6]
        );
        let lines = letters.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(
            lines[0].contains(r#""position":"conn 3 line 3""#),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(r#""position":"conn 3 line 4""#),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("at most 16 bytes"), "{}", lines[1]);
    }

    #[test]
    fn frames_bad_empty_fatal_and_truncated() {
        let letters = DeadLetterSink::in_memory();
        let mut d = decoder(
            TcpSourceOptions::new(Framing::LengthPrefixed).max_frame(64),
            &letters,
        );
        let mut bytes = frame(br#"{"key":1,"value":2,"time":3}"#);
        bytes.extend(frame(b""));
        bytes.extend(frame(br#"{"key":1"#));
        assert!(d.push(&bytes));
        d.finish();
        assert_eq!(d.records.len(), 1);
        assert_eq!(letters.count(), 2);
        // A truncated frame at the end.
        let mut d = decoder(TcpSourceOptions::new(Framing::LengthPrefixed), &letters);
        assert!(d.push(&frame(b"{}")[..4]));
        d.finish();
        assert!(letters.lines()[2].contains(r#""position":"conn 3 frame 1""#));
        assert!(letters.lines()[2].contains("stream's end"));
        // An oversized length: fatal, reported once.
        let mut d = decoder(
            TcpSourceOptions::new(Framing::LengthPrefixed).max_frame(4),
            &letters,
        );
        assert!(!d.push(&frame(b"too long")));
        d.finish();
        assert_eq!(letters.count(), 4);
        assert!(letters.lines()[3].contains("cannot resynchronise"));
    }

    #[test]
    fn a_time_out_of_range_is_a_dead_letter_in_lines_and_frames() {
        let letters = DeadLetterSink::in_memory();
        let mut d = decoder(TcpSourceOptions::new(Framing::Lines(Format::Csv)), &letters);
        assert!(d.push(format!("1,1,1\n2,2,{}\n3,3,3\n", u64::MAX).as_bytes()));
        d.finish();
        assert_eq!(d.records.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
        let mut d = decoder(TcpSourceOptions::new(Framing::LengthPrefixed), &letters);
        let mut bytes = frame(br#"{"key":1,"value":2,"time":18446744073709551615}"#);
        bytes.extend(frame(br#"{"key":1,"value":2,"time":7}"#));
        assert!(d.push(&bytes));
        d.finish();
        assert_eq!(d.records.iter().map(|r| r.0).collect::<Vec<_>>(), [7]);
        let lines = letters.lines();
        assert_eq!(letters.count(), 2, "{lines:?}");
        assert!(
            lines[0].contains(r#""position":"conn 3 line 2""#),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(r#""position":"conn 3 frame 1""#),
            "{}",
            lines[1]
        );
        assert!(lines.iter().all(|line| line.contains("out of range")));
    }
}
