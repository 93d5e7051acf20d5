//! The TCP source: a listener on its own thread, its connections (each bounded in memory,
//! time and number), decoding them into records, and handing them to the app (see the
//! [module documentation](super)).

use std::cell::RefCell;
use std::io::{self};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::AsyncReadExt;

use crate::dataflow::{AppBuilder, Batch, Data, Stream, Time};
use crate::io::file::{DeadLetterSink, Line, TimeOf};
use crate::io::late::{LateCheck, LateRows};
use crate::io::parse::{Decode, Format, LengthFramer, LineFramer, DEFAULT_MAX_FRAME};
use crate::io::payload::{KeyedPayloads, PayloadDecoder};
use crate::source::{Pacing, RecordSource};

/// Most bytes a connection reads at a time.
pub const READ_BYTES: usize = 64 * 1024;

/// How many batches (one per chunk read) wait between the network thread and the app.
pub const CHANNEL_BATCHES: usize = 256;

/// The default for [`TcpSourceOptions::max_open_connections`].
pub const DEFAULT_MAX_OPEN_CONNECTIONS: usize = 64;

/// The default for [`TcpSourceOptions::idle_timeout`]: 60 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a connection waiting for bytes (or a task waiting for room in the channel)
/// looks whether the source was stopped: [`TcpSourceHandle::stop`] closes every
/// connection within this.
pub const STOP_POLL: Duration = Duration::from_millis(100);

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

/// A shared secret a connection must send as its first line or frame. Its `Debug` shows
/// no byte of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<[u8]>);

impl Token {
    /// A token of these bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        Self(Arc::from(bytes.as_ref()))
    }

    /// Whether `sent` is the token, compared in time that does not depend on where they
    /// differ.
    fn matches(&self, sent: &[u8]) -> bool {
        self.0.len() == sent.len()
            && self
                .0
                .iter()
                .zip(sent)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// A TCP source's options: its framing, the longest line or frame, and when it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSourceOptions {
    /// How records are framed.
    pub framing: Framing,
    /// The longest line or frame payload accepted, in bytes (default
    /// [`DEFAULT_MAX_FRAME`]).
    pub max_frame: usize,
    /// End the stream after this many connections have been accepted and read to their
    /// end; `None` (the default): only [`TcpSourceHandle::close`] ends it.
    pub max_connections: Option<u64>,
    /// The most connections open at once (default [`DEFAULT_MAX_OPEN_CONNECTIONS`]);
    /// more are closed as soon as they are accepted, and counted.
    pub max_open_connections: usize,
    /// A connection that sends nothing for this long is closed (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
    /// The shared secret every connection must send first; `None` (the default): none.
    pub token: Option<Token>,
}

impl TcpSourceOptions {
    /// `framing`, with the default maximum frame and no connection limit.
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: None,
            max_open_connections: DEFAULT_MAX_OPEN_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            token: None,
        }
    }

    /// With at most `connections` open at once (at least 1).
    pub fn max_open_connections(mut self, connections: usize) -> Self {
        self.max_open_connections = connections.max(1);
        self
    }

    /// Closing a connection idle for `timeout`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Asking every connection to send `token` first.
    pub fn token(mut self, token: Token) -> Self {
        self.token = Some(token);
        self
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
    /// Records sent into the channel towards the app.
    records: AtomicU64,
    finished: AtomicBool,
    /// Connections closed at once because `max_open_connections` were open.
    refused: AtomicU64,
    /// Connections closed for a wrong or missing token.
    unauthorized: AtomicU64,
    /// Connections closed for sending nothing for the idle timeout.
    idle_closed: AtomicU64,
    /// Records decoded but not sent, because the source was stopped.
    unsent: AtomicU64,
    /// Records the app took from the channel.
    taken: AtomicU64,
    /// [`TcpSourceHandle::stop`] was called.
    stopping: AtomicBool,
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
    /// accepted have been read to their end (see the [module docs](crate::io::tcp)). Idempotent.
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

    /// Connections closed as soon as they were accepted, because
    /// [`TcpSourceOptions::max_open_connections`] were open.
    pub fn connections_refused(&self) -> u64 {
        self.stats.refused.load(Ordering::Acquire)
    }

    /// Connections closed because their first line or frame was not the token.
    pub fn connections_unauthorized(&self) -> u64 {
        self.stats.unauthorized.load(Ordering::Acquire)
    }

    /// Connections closed for being idle longer than [`TcpSourceOptions::idle_timeout`].
    pub fn connections_idle_closed(&self) -> u64 {
        self.stats.idle_closed.load(Ordering::Acquire)
    }

    /// Ends the stream at once, for when the app no longer takes records (see the
    /// [module docs](crate::io::tcp)): closes the listener and, within [`STOP_POLL`], every open
    /// connection. Idempotent.
    pub fn stop(&self) {
        self.stats.stopping.store(true, Ordering::Release);
        self.close();
    }

    /// Records received and decoded that the app never took: queued towards it when it
    /// stopped, or decoded after [`stop`](Self::stop). Final once
    /// [`is_finished`](Self::is_finished).
    pub fn unread(&self) -> u64 {
        let stats = &self.stats;
        (stats.records.load(Ordering::Acquire) + stats.unsent.load(Ordering::Acquire))
            .saturating_sub(stats.taken.load(Ordering::Acquire))
    }

    /// Waits up to `timeout` for the network side to finish; whether it did.
    pub fn wait_finished(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// Decodes one connection's bytes: framing, decoding, late records, dead letters.
struct ConnDecoder<T, D> {
    /// The source of dead letters (the listener's address).
    source: Arc<str>,
    /// The connection's number.
    conn: u64,
    framer: Framer,
    /// Lines or frames framed so far.
    number: u64,
    /// Whether the stream failed (a fatal length, or no token): read no more.
    failed: bool,
    /// The token the connection must still send first; `None` once sent, or when none
    /// is asked.
    token: Option<Token>,
    /// The connection sent something else than the token first, or nothing.
    unauthorized: bool,
    letters: DeadLetterSink,
    /// Turns each line or frame into a timed record (this connection's own).
    decoder: D,
    /// The source's late check, shared by its connections: they are read on one thread,
    /// and records go to the app in the order they are decoded.
    late: Rc<RefCell<LateCheck>>,
    /// Records decoded, not yet handed over.
    records: Batch<T>,
}

enum Framer {
    Lines {
        framer: LineFramer,
        out: Vec<Result<Vec<u8>, String>>,
    },
    Frames {
        framer: LengthFramer,
        out: Vec<Vec<u8>>,
    },
}

impl<T, D: PayloadDecoder<T>> ConnDecoder<T, D> {
    fn new(
        source: Arc<str>,
        conn: u64,
        options: &TcpSourceOptions,
        letters: DeadLetterSink,
        decoder: D,
        late: Rc<RefCell<LateCheck>>,
    ) -> Self {
        let framer = match options.framing {
            Framing::Lines(_) => Framer::Lines {
                framer: LineFramer::with_max_line(options.max_frame),
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
            failed: false,
            token: options.token.clone(),
            unauthorized: false,
            letters,
            decoder,
            late,
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
            Framer::Lines { framer, out } => {
                framer.push(chunk, out);
                self.lines(out);
            }
            Framer::Frames { framer, out } => {
                let pushed = framer.push(chunk, out);
                self.frames(out);
                if let (Err(reason), false) = (pushed, self.failed) {
                    self.failed = true;
                    if self.token.is_some() {
                        // A bad length before the token: unauthorized, not a letter.
                        self.unauthorized = true;
                    } else {
                        self.letter("frame", self.number + 1, &reason, b"");
                    }
                }
            }
        }
        self.framer = framer;
        !self.failed
    }

    /// Whether `first` (the connection's first line or frame) is the token; when it is
    /// not, the connection is marked unauthorized and failed. `true` when no token is
    /// asked or it was sent already.
    fn authorize(&mut self, first: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if first.is_some_and(|sent| token.matches(sent)) {
            self.token = None;
            return true;
        }
        self.unauthorized = true;
        self.failed = true;
        false
    }

    /// At the end of the connection: dead-letters a last line cut off before its `\n`,
    /// or reports a truncated frame.
    fn finish(&mut self) {
        if self.failed && self.unauthorized {
            return;
        }
        if self.token.is_some() {
            // The connection ended before sending the token: nothing it sent counts.
            self.unauthorized = true;
            self.failed = true;
            return;
        }
        let mut framer = std::mem::replace(&mut self.framer, Framer::placeholder());
        match &mut framer {
            Framer::Lines { framer, out, .. } => {
                framer.finish(out);
                for line in out.drain(..) {
                    self.number += 1;
                    match line {
                        Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {}
                        Ok(bytes) => self.letter(
                            "line",
                            self.number,
                            "expected a line ending (\\n), found the end of the connection: the line was cut off",
                            &bytes,
                        ),
                        Err(reason) => self.letter("line", self.number, &reason, b""),
                    }
                }
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

    /// Passes `record` on unless it is late and late records are dead letters.
    fn admit(&mut self, unit: &str, (time, record): (Time, T), bytes: &[u8]) {
        let admitted = self.late.borrow_mut().admit(time);
        match admitted {
            Ok(()) => self.records.push((time, record)),
            Err(reason) => self.letter(unit, self.number, &reason, bytes),
        }
    }

    fn lines(&mut self, out: &mut Vec<Result<Vec<u8>, String>>) {
        for line in out.drain(..) {
            if self.failed {
                // Unauthorized: nothing more of this connection counts.
                continue;
            }
            self.number += 1;
            if self.token.is_some() {
                self.authorize(line.as_deref().ok());
                continue;
            }
            match line {
                Ok(bytes) => match self.decoder.decode(&bytes) {
                    Line::Record(timed) => self.admit("line", timed, &bytes),
                    Line::Skipped => {}
                    Line::Bad(reason) => self.letter("line", self.number, &reason, &bytes),
                },
                Err(reason) => {
                    self.decoder.content_seen();
                    self.letter("line", self.number, &reason, b"");
                }
            }
        }
    }

    fn frames(&mut self, out: &mut Vec<Vec<u8>>) {
        for payload in out.drain(..) {
            if self.failed {
                continue;
            }
            self.number += 1;
            if self.token.is_some() {
                self.authorize(Some(&payload));
                continue;
            }
            let decoded = if payload.is_empty() {
                Line::Bad("expected a JSON record, found an empty frame".to_owned())
            } else {
                self.decoder.decode(&payload)
            };
            match decoded {
                Line::Record(timed) => self.admit("frame", timed, &payload),
                Line::Skipped => self.letter(
                    "frame",
                    self.number,
                    "expected a JSON record, found a blank frame",
                    &payload,
                ),
                Line::Bad(reason) => self.letter("frame", self.number, &reason, &payload),
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
struct Network<T, D> {
    source: Arc<str>,
    options: TcpSourceOptions,
    letters: DeadLetterSink,
    /// The prototype each connection clones its decoder from.
    decoder: D,
    late: Rc<RefCell<LateCheck>>,
    records: flume::Sender<Batch<T>>,
    stats: Arc<TcpStats>,
}

impl<T: Data, D: PayloadDecoder<T>> Network<T, D> {
    fn stopping(&self) -> bool {
        self.stats.stopping.load(Ordering::Acquire)
    }

    /// Hands `records` to the app, waiting for room; `false` when the app is gone or
    /// the source was stopped (the records are then counted as unsent).
    async fn hand_over(&self, records: &mut Batch<T>) -> bool {
        if records.is_empty() {
            return true;
        }
        let batch = std::mem::take(records);
        let count = batch.len() as u64;
        let sent = futures_lite::future::or(
            async { Some(self.records.send_async(batch).await.is_ok()) },
            async {
                while !self.stopping() {
                    glommio::timer::sleep(STOP_POLL).await;
                }
                None
            },
        )
        .await;
        match sent {
            Some(true) => {
                self.stats.records.fetch_add(count, Ordering::AcqRel);
                true
            }
            // The app is gone or stopped: these records never reach it.
            Some(false) | None => {
                self.stats.unsent.fetch_add(count, Ordering::AcqRel);
                false
            }
        }
    }

    /// Reads one connection to its end.
    async fn read_connection(&self, mut stream: glommio::net::TcpStream, conn: u64) {
        let mut decoder = ConnDecoder::new(
            self.source.clone(),
            conn,
            &self.options,
            self.letters.clone(),
            self.decoder.clone(),
            self.late.clone(),
        );
        let mut buf = vec![0; READ_BYTES];
        // Reads wake up every STOP_POLL to look for a stop; idleness is timed here.
        let poll = STOP_POLL
            .min(self.options.idle_timeout)
            .max(Duration::from_millis(1));
        let _ = stream.set_read_timeout(Some(poll));
        let mut last_bytes = Instant::now();
        loop {
            if self.stopping() {
                return;
            }
            let read = match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(read) => read,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) =>
                {
                    if last_bytes.elapsed() >= self.options.idle_timeout {
                        self.stats.idle_closed.fetch_add(1, Ordering::AcqRel);
                        tracing::debug!(source = %self.source, conn, "TCP source: closing an idle connection");
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(source = %self.source, conn, error = %e, "TCP source: read failed; closing the connection");
                    break;
                }
            };
            last_bytes = Instant::now();
            let go_on = decoder.push(&buf[..read]);
            if !self.hand_over(&mut decoder.records).await {
                return;
            }
            if !go_on {
                break;
            }
        }
        decoder.finish();
        if decoder.unauthorized {
            self.stats.unauthorized.fetch_add(1, Ordering::AcqRel);
            tracing::warn!(source = %self.source, conn, "TCP source: closing a connection that did not send the token first");
        }
        self.hand_over(&mut decoder.records).await;
    }
}

/// Accepts connections until the limit or `close`, then waits for the open ones.
async fn serve<T: Data, D: PayloadDecoder<T>>(
    listener: glommio::net::TcpListener,
    network: Rc<Network<T, D>>,
    close: flume::Receiver<()>,
) {
    let (done_tx, done_rx) = flume::unbounded::<()>();
    let open = Rc::new(std::cell::Cell::new(0usize));
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
        if open.get() >= network.options.max_open_connections {
            network.stats.refused.fetch_add(1, Ordering::AcqRel);
            tracing::debug!(source = %network.source, "TCP source: too many open connections; closing a new one");
            drop(stream);
            continue;
        }
        accepted += 1;
        open.set(open.get() + 1);
        network.stats.accepted.store(accepted, Ordering::Release);
        let network = network.clone();
        let done = done_tx.clone();
        let open_here = open.clone();
        glommio::spawn_local(async move {
            network.read_connection(stream, accepted).await;
            network.stats.closed.fetch_add(1, Ordering::AcqRel);
            open_here.set(open_here.get() - 1);
            let _ = done.send(());
        })
        .detach();
    }
    drop(listener);
    while open.get() > 0 {
        let _ = done_rx.recv_async().await;
    }
}

/// One incarnation of the TCP source partition: takes batches from the network thread.
struct ChannelRecords<T> {
    batches: flume::Receiver<Batch<T>>,
    batch: std::vec::IntoIter<(Time, T)>,
    /// Counts the records taken (for [`TcpSourceHandle::unread`]).
    stats: Arc<TcpStats>,
}

impl<T> ChannelRecords<T> {
    fn took(&self, record: Option<(Time, T)>) -> Option<(Time, T)> {
        if record.is_some() {
            self.stats.taken.fetch_add(1, Ordering::Relaxed);
        }
        record
    }
}

impl<T: Data> RecordSource<T> for ChannelRecords<T> {
    /// Blocks until a record comes (the source partition uses `poll_record` instead).
    fn next_record(&mut self) -> Option<(Time, T)> {
        loop {
            if let Some(record) = self.batch.next() {
                return self.took(Some(record));
            }
            self.batch = self.batches.recv().ok()?.into_iter();
        }
    }

    fn poll_record(&mut self) -> Poll<Option<(Time, T)>> {
        loop {
            if let Some(record) = self.batch.next() {
                return Poll::Ready(self.took(Some(record)));
            }
            match self.batches.try_recv() {
                Ok(batch) => self.batch = batch.into_iter(),
                Err(flume::TryRecvError::Empty) => return Poll::Pending,
                Err(flume::TryRecvError::Disconnected) => return Poll::Ready(None),
            }
        }
    }

    /// A socket cannot be read again: a restored TCP source goes on with what arrives
    /// next, so records that arrived after the checkpoint and before the crash are lost
    /// (at most once across a restore; the run says so at start).
    fn rewind(&mut self, _handed_out: u64, _extra: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

impl AppBuilder {
    /// A source of the records sent to a listener bound at `listen`, framed and decoded
    /// per `options` (a [`Framing`] or [`TcpSourceOptions`]), read by one partition (see
    /// the [module docs](crate::io::tcp)). Malformed records go to `dead_letters` with their
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
        let format = match options.framing {
            Framing::Lines(format) => format,
            Framing::LengthPrefixed => Format::Json,
        };
        let time_of: TimeOf<T> = Arc::new(time_of);
        let decoder = KeyedPayloads::new(format, time_of, true);
        self.source_tcp_decoded(
            name,
            listen,
            options,
            out_of_orderness,
            (decoder, LateCheck::new(LateRows::Pass, out_of_orderness)),
            dead_letters,
        )
    }

    /// [`source_tcp`](Self::source_tcp) with its decode step: `decoding` is the
    /// prototype every connection clones its decoder from, and the source's late check.
    pub(crate) fn source_tcp_decoded<T: Data, D: PayloadDecoder<T>>(
        &self,
        name: &str,
        listen: SocketAddr,
        options: TcpSourceOptions,
        out_of_orderness: Time,
        (decoder, late): (D, LateCheck),
        dead_letters: DeadLetterSink,
    ) -> io::Result<(Stream<T>, TcpSourceHandle)> {
        let (records_tx, records_rx) = flume::bounded::<Batch<T>>(CHANNEL_BATCHES);
        let (close_tx, close_rx) = flume::bounded::<()>(1);
        let (ready_tx, ready_rx) = flume::bounded::<io::Result<SocketAddr>>(1);
        let stats = Arc::new(TcpStats::default());
        let thread_stats = stats.clone();
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
                    if !addr.ip().is_loopback() {
                        tracing::warn!(
                            address = %addr,
                            "TCP source bound to an address other than loopback: anyone who can reach it can send records"
                        );
                    }
                    let network = Rc::new(Network {
                        source: Arc::from(addr.to_string()),
                        options,
                        letters: dead_letters,
                        decoder,
                        late: Rc::new(RefCell::new(late)),
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
        let taken_stats = stats.clone();
        let stream = self
            .source(name, out_of_orderness, Pacing::Unpaced, move |_, _| {
                ChannelRecords {
                    batches: records_rx.clone(),
                    batch: Vec::new().into_iter(),
                    stats: taken_stats.clone(),
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::KeyedRecord;
    use crate::typed::Row;

    fn decoder(
        options: TcpSourceOptions,
        letters: &DeadLetterSink,
    ) -> ConnDecoder<KeyedRecord, KeyedPayloads<KeyedRecord>> {
        let format = match options.framing {
            Framing::Lines(format) => format,
            Framing::LengthPrefixed => Format::Json,
        };
        ConnDecoder::new(
            Arc::from("here"),
            3,
            &options,
            letters.clone(),
            KeyedPayloads::new(format, Arc::new(|r: &KeyedRecord| r.time), true),
            Rc::default(),
        )
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn typed_rows_are_decoded_with_a_header_per_connection_and_one_late_check() {
        use crate::io::late::LateRows;
        use crate::typed::decode::RowDecoder;
        use crate::typed::{Schema, Type, Value};

        let schema = Arc::new(Schema::new(vec![
            ("card", Type::String),
            ("ts", Type::Timestamp),
        ]));
        let prototype = RowDecoder::new(Format::Csv, schema, 1, true);
        let late = Rc::new(RefCell::new(LateCheck::new(LateRows::DeadLetter, 10)));
        let letters = DeadLetterSink::in_memory();
        let options = TcpSourceOptions::new(Framing::Lines(Format::Csv));
        let connection = |conn| {
            ConnDecoder::new(
                Arc::from("here"),
                conn,
                &options,
                letters.clone(),
                prototype.clone(),
                late.clone(),
            )
        };
        // Connection 1 names the fields in another order; connection 2 has no header.
        let mut first = connection(1);
        assert!(first.push(b"ts,card\n30,c1\nx,c2\n"));
        let mut second = connection(2);
        assert!(second.push(b"c3,15\nc4,25\n"));
        // 15 is more than 10 behind 30, read on the other connection before it.
        assert!(first.push(b"ts,card\n"));
        first.finish();
        second.finish();
        let rows = |d: &ConnDecoder<Row, RowDecoder>| -> Vec<(Time, String)> {
            d.records
                .iter()
                .map(|(t, row)| match &row[0] {
                    Value::Str(card) => (*t, card.clone()),
                    other => panic!("a card, not {other:?}"),
                })
                .collect()
        };
        assert_eq!(rows(&first), [(30, "c1".to_owned())]);
        assert_eq!(rows(&second), [(25, "c4".to_owned())]);
        let lines = letters.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].contains(r#""position":"conn 1 line 3""#),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].contains("field 1 (ts): expected timestamp"),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].contains(r#""position":"conn 2 line 1""#),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("late: event time 15 ms"), "{}", lines[1]);
        // A header after the first line is a malformed row.
        assert!(
            lines[2].contains(r#""position":"conn 1 line 4""#),
            "{}",
            lines[2]
        );
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
        // The last line has no `\n`: the peer cut it off, so it is a letter.
        assert_eq!(d.records.iter().map(|r| r.0).collect::<Vec<_>>(), vec![3]);
        let lines = letters.lines();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[2].contains(r#""position":"conn 3 line 5""#) && lines[2].contains("cut off"),
            "{}",
            lines[2]
        );
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

    #[test]
    fn a_cut_off_last_line_is_a_letter_and_a_blank_one_is_not() {
        let letters = DeadLetterSink::in_memory();
        let mut d = decoder(TcpSourceOptions::new(Framing::Lines(Format::Csv)), &letters);
        assert!(d.push(b"1,2,3\n4,5,"));
        d.finish();
        assert_eq!(d.records.len(), 1);
        assert_eq!(letters.count(), 1);
        assert!(letters.lines()[0].contains(r#""record":"4,5,""#));
        let mut d = decoder(TcpSourceOptions::new(Framing::Lines(Format::Csv)), &letters);
        assert!(d.push(b"1,2,3\n  "));
        d.finish();
        assert_eq!(letters.count(), 1, "trailing blanks are no record");
    }

    #[test]
    fn the_token_must_come_first_and_is_never_a_letter() {
        let options =
            TcpSourceOptions::new(Framing::Lines(Format::Csv)).token(Token::new("s3cret"));
        assert!(!format!("{options:?}").contains("s3cret"));
        let letters = DeadLetterSink::in_memory();
        // The right token, then records: line numbers count the token's line.
        let mut d = decoder(options.clone(), &letters);
        assert!(d.push(b"s3cret\r\n1,2,3\nbad\n"));
        d.finish();
        assert!(!d.unauthorized);
        assert_eq!(d.records.len(), 1);
        assert!(letters.lines()[0].contains("conn 3 line 3"));
        // A wrong token: closed, nothing decoded, nothing dead-lettered.
        let mut d = decoder(options.clone(), &letters);
        assert!(!d.push(b"s3cres\n1,2,3\n"));
        d.finish();
        assert!(d.unauthorized);
        assert!(d.records.is_empty());
        // No token before the end: unauthorized too, the cut line not a letter.
        let mut d = decoder(options.clone(), &letters);
        assert!(d.push(b"s3c"));
        d.finish();
        assert!(d.unauthorized);
        assert_eq!(letters.count(), 1);
        assert!(letters.lines().iter().all(|l| !l.contains("s3c")));
        // Length-prefixed: the first frame is the token.
        let options = TcpSourceOptions::new(Framing::LengthPrefixed).token(Token::new("k"));
        let mut d = decoder(options.clone(), &letters);
        let mut bytes = frame(b"k");
        bytes.extend(frame(br#"{"key":1,"value":2,"time":3}"#));
        assert!(d.push(&bytes));
        assert_eq!(d.records.len(), 1);
        let mut d = decoder(options, &letters);
        assert!(!d.push(&frame(br#"{"key":1,"value":2,"time":3}"#)));
        assert!(d.unauthorized && d.records.is_empty());
        assert_eq!(letters.count(), 1);
    }
}
