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
//!   A last line that the peer cut off (the connection ended before its `\n`) is
//!   dead-lettered, not decoded: it may be any prefix of a record.
//! - [`Framing::LengthPrefixed`]: a 4-byte big-endian length, then that many bytes of
//!   payload, decoded as one JSON record. A length over the maximum frame is fatal for
//!   that connection (nothing marks where the next frame starts): it is dead-lettered and
//!   the connection is closed. A stream that ends inside a frame (a truncated frame) is
//!   dead-lettered too. An empty payload is dead-lettered like any payload that is not a
//!   record, and the connection goes on.
//!
//! Bounds, each a [`TcpSourceOptions`] field:
//! - at most [`TcpSourceOptions::max_open_connections`] connections are open at once
//!   (default [`DEFAULT_MAX_OPEN_CONNECTIONS`]); one more is accepted and closed at once,
//!   and counted ([`TcpSourceHandle::connections_refused`]);
//! - a connection holds at most one read buffer of [`READ_BYTES`] and one unfinished
//!   line or frame of at most [`TcpSourceOptions::max_frame`] bytes: a longer line is
//!   dead-lettered and the rest of it skipped as it comes, without being buffered; so
//!   the memory of a source's connections is bounded by
//!   `max_open_connections × (READ_BYTES + max_frame)`, plus the kernel's socket buffers;
//! - a connection that sends nothing for [`TcpSourceOptions::idle_timeout`] (default
//!   [`DEFAULT_IDLE_TIMEOUT`]) is closed and counted
//!   ([`TcpSourceHandle::connections_idle_closed`]);
//! - with a [`TcpSourceOptions::token`], the first line (or frame) of every connection
//!   must be that token, byte for byte; a connection that sends another first line, or
//!   ends before sending one, is closed and counted
//!   ([`TcpSourceHandle::connections_unauthorized`]). The token is compared in constant
//!   time, and neither it nor a wrong guess is ever logged or dead-lettered;
//! - binding an address other than a loopback one logs a warning: anyone who can reach
//!   it can send records.
//!
//! The records are keyed ones decoded with [`Decode`](crate::io::Decode), or typed rows
//! decoded as the typed file source decodes its lines ([`crate::typed::connector`]).
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
//! [`TcpSourceHandle::stop`] ends it at once, when the app has stopped taking records:
//! the listener is closed, every open connection is closed within [`STOP_POLL`], and
//! the records that were received but that the app never took (queued between the
//! network thread and the app, or decoded after the stop) are counted
//! ([`TcpSourceHandle::unread`]) instead of being lost silently.
//!
//! [`MAX_EVENT_TIME_MS`]: crate::dataflow::MAX_EVENT_TIME_MS
//!
//! # The sink
//!
//! [`Stream::sink_tcp`] connects to its peer when the app is built (with `std::net`) and
//! writes every record as one JSON line. Each sink partition buffers its lines and writes
//! them when the buffer passes 64 KiB and at every watermark, under a lock on the shared
//! connection. These are blocking writes on the sink's shard, each bounded by a write
//! deadline ([`Stream::sink_tcp_with_timeout`]; default [`DEFAULT_WRITE_TIMEOUT`]): a
//! slow peer stalls that shard at most that long per buffer. A buffer not fully sent by
//! its deadline, or a write error, breaks the sink: it is logged once, the connection is
//! shut down, and from then on the sink writes nothing and counts every record as failed
//! output (so a peer that stops reading costs the run one deadline, not its end). The
//! lines that reached the socket whole count as written. When every sink partition has
//! seen the end of its input, the connection's write half is shut down, so the peer reads
//! to its end.

//!
//! Where things live: `source` (the listener, its connections, decoding and the bounds
//! on them), `sink` (the connection a sink partition writes to, and its deadline).

#[allow(unused_imports)] // what the documentation above links to
use crate::dataflow::{check_event_time, AppBuilder, Msg, Stream};
#[allow(unused_imports)]
use crate::io::file::DeadLetterSink;
#[allow(unused_imports)]
use crate::io::parse::Format;
#[allow(unused_imports)]
use crate::source::RecordSource;

mod sink;
mod source;

pub use sink::DEFAULT_WRITE_TIMEOUT;
pub use source::{
    Framing, TcpSourceHandle, TcpSourceOptions, Token, CHANNEL_BATCHES, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_OPEN_CONNECTIONS, READ_BYTES, STOP_POLL,
};
