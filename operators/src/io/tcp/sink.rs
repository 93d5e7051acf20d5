//! The TCP sink: each partition writes JSON lines to one connection, every write under a
//! deadline (see the [module documentation](super)).

use std::any::Any;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dirigo_runtime::{Context, SnapshotError, StateKind};

use crate::checkpoint::{Saved, SavedInputs};
use crate::dataflow::{
    add_operator, partitions_of_self, AppCounters, Batch, CheckpointId, Data, Logic, Msg, Stream,
    Time, Wiring,
};
use crate::partition::Partitioning;

/// The default write deadline of a TCP sink ([`Stream::sink_tcp`]): 5 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
struct TcpSinkShared {
    stream: Mutex<std::net::TcpStream>,
    peer: SocketAddr,
    /// The longest a buffer's write may take.
    write_timeout: Duration,
    /// Why the sink broke (a write failed or missed its deadline): nothing is written
    /// from then on.
    broken: Mutex<Option<String>>,
    /// Sink partitions that have seen the end of their input.
    finished: AtomicU32,
}

impl TcpSinkShared {
    /// Writes `bytes` (whole lines) by the write deadline; returns how many lines went
    /// out whole, and the error when not all did.
    fn write(&self, bytes: &[u8]) -> Result<u64, (u64, String)> {
        if bytes.is_empty() {
            return Ok(0);
        }
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(error) = &*broken {
            return Err((0, error.clone()));
        }
        let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + self.write_timeout;
        let mut done = 0;
        let mut failure = None;
        while done < bytes.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                failure = Some(format!(
                    "the peer took no more within the write deadline of {:?}",
                    self.write_timeout
                ));
                break;
            }
            if let Err(e) = stream.set_write_timeout(Some(left)) {
                failure = Some(e.to_string());
                break;
            }
            match stream.write(&bytes[done..]) {
                Ok(0) => {
                    failure = Some("the connection took no more bytes".to_owned());
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let complete = bytes[..done]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let lines = bytes[..complete].iter().filter(|&&b| b == b'\n').count() as u64;
        let Some(failure) = failure else {
            return Ok(lines);
        };
        let message = format!("cannot write to TCP peer {}: {failure}", self.peer);
        tracing::warn!("{message}; the sink's output is counted as failed from now on");
        // The peer gets no more (and no half line later): the connection is closed.
        let _ = stream.shutdown(Shutdown::Both);
        *broken = Some(message.clone());
        Err((lines, message))
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
    /// Records in `buffer`.
    pending: u64,
    partitions: u32,
    counters: Arc<AppCounters>,
    _records: PhantomData<fn(T)>,
}

/// A partition writes its lines once it holds this many bytes (and at every watermark).
const SINK_BUFFER: usize = 64 * 1024;

impl<T> TcpSinkLogic<T> {
    /// Writes the buffer out and counts what went and what did not.
    fn drain(&mut self) {
        if self.pending == 0 {
            self.buffer.clear();
            return;
        }
        match self.shared.write(&self.buffer) {
            Ok(lines) => self.counters.outputs(lines, 0, String::new),
            Err((lines, error)) => {
                self.counters
                    .outputs(lines, self.pending.saturating_sub(lines), || error)
            }
        }
        self.pending = 0;
        self.buffer.clear();
    }
}

impl<T: Data + serde::Serialize> Logic for TcpSinkLogic<T> {
    fn on_data(&mut self, _: &mut Context<'_, Msg>, _input: usize, data: Box<dyn Any + Send>) {
        let batch = data
            .downcast::<Batch<T>>()
            .expect("an edge carries its upstream operator's record type");
        for (_, record) in *batch {
            if serde_json::to_writer(&mut self.buffer, &record).is_ok() {
                self.buffer.push(b'\n');
                self.pending += 1;
            }
            if self.buffer.len() >= SINK_BUFFER {
                self.drain();
            }
        }
    }

    fn on_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {
        self.drain();
    }

    fn forward_frontier(&mut self, _: &mut Context<'_, Msg>, _: Time) {}

    fn on_end(&mut self, _: &mut Context<'_, Msg>) {
        self.drain();
        if self.shared.finished.fetch_add(1, Ordering::AcqRel) + 1 == self.partitions {
            self.shared.shutdown();
        }
        self.counters.sink_finished();
    }

    fn forward_end(&mut self, _: &mut Context<'_, Msg>) {}

    /// A socket takes what is written at once: output is at least once across a
    /// restore (what was sent after the checkpoint is sent again).
    fn save(&mut self, _: CheckpointId) -> Result<Saved, SnapshotError> {
        Ok(Saved::Nothing)
    }

    fn restore(&mut self, _: &SavedInputs, _: Option<&[u8]>) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn forward_barrier(&mut self, _: &mut Context<'_, Msg>, _: CheckpointId) {}
}

impl<T: Data + serde::Serialize> Stream<T> {
    /// Writes every record as one JSON line to a TCP connection to `connect_to`, opened
    /// here, with the default write deadline [`DEFAULT_WRITE_TIMEOUT`] (see the
    /// [module docs](crate::io::tcp)).
    ///
    /// # Errors
    /// When the connection cannot be opened.
    pub fn sink_tcp(&self, name: &str, connect_to: SocketAddr) -> io::Result<()> {
        self.sink_tcp_with_timeout(name, connect_to, DEFAULT_WRITE_TIMEOUT)
    }

    /// As [`sink_tcp`](Self::sink_tcp), with `write_timeout` as the longest a buffer's
    /// write may block the sink's shard (at least 1 ms). A write that misses it breaks
    /// the sink: the rest of its output is counted as failed.
    ///
    /// # Errors
    /// When the connection cannot be opened.
    pub fn sink_tcp_with_timeout(
        &self,
        name: &str,
        connect_to: SocketAddr,
        write_timeout: Duration,
    ) -> io::Result<()> {
        let stream = std::net::TcpStream::connect_timeout(
            &connect_to,
            write_timeout.max(Duration::from_secs(1)),
        )
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("TCP sink {name}: cannot connect to {connect_to}: {e}"),
            )
        })?;
        stream.set_nodelay(true)?;
        let shared = Arc::new(TcpSinkShared {
            stream: Mutex::new(stream),
            peer: connect_to,
            write_timeout: write_timeout.max(Duration::from_millis(1)),
            broken: Mutex::new(None),
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
                    pending: 0,
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
