//! The HTTP listener of `[metrics] listen`: `GET /metrics` (Prometheus text),
//! `GET /api/status` (JSON) and `GET /` (the live page, one self-contained HTML file
//! with its script inline, no external scripts or fonts).
//!
//! One thread, outside the shards, serves one connection at a time and closes it after
//! the answer. It runs at idle priority ([`dirigo_runtime::background`]): on a machine
//! whose every core runs a shard, a scrape takes only CPU time the shards leave, and a
//! shard that wakes with work preempts it at once; there, a scrape may take longer to be
//! answered (tens of milliseconds), never the records. Bounds: a request may have at most [`MAX_REQUEST_BYTES`]; a client gets
//! [`IO_TIMEOUT`] to send it and again to take the answer, so a stuck client holds the
//! listener for at most twice that; connections waiting beyond the one served wait in
//! the kernel's accept backlog. The thread looks for a stop every [`STOP_POLL`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::Board;

/// The largest request read (its head; no request here has a body).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// How long a client gets to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the listener waits after a failed `accept` (out of file descriptors, say)
/// before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// The live page.
const PAGE: &str = include_str!("page.html");

/// A running listener; stopped when dropped.
pub struct Server {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `address` and serves `board` from a thread of its own.
    ///
    /// # Errors
    /// When the address cannot be bound (taken, not this host's); the message names it.
    pub fn start(address: SocketAddr, board: Arc<Board>) -> Result<Self, String> {
        let listener = TcpListener::bind(address)
            .map_err(|e| format!("[metrics] listen: cannot listen on {address}: {e}"))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("[metrics] listen: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dirigo-metrics".into())
            .spawn(move || {
                if let Err(e) = dirigo_runtime::background::yield_to_shards() {
                    tracing::warn!("the metrics thread keeps its normal priority: {e}");
                }
                serve(&listener, &board, &stopping)
            })
            .map_err(|e| format!("[metrics] listen: cannot start its thread: {e}"))?;
        Ok(Self {
            address,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the system chose for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the thread out of `accept` (a wildcard address is reached on loopback).
        let mut wake = self.address;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let woken = TcpStream::connect_timeout(&wake, IO_TIMEOUT).is_ok();
        if let Some(thread) = self.thread.take() {
            if woken {
                let _ = thread.join();
            }
            // Otherwise the thread is left to end with the process rather than wait.
        }
    }
}

fn serve(listener: &TcpListener, board: &Arc<Board>, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, board) {
                    tracing::debug!("metrics: a request failed: {e}");
                }
            }
            Err(e) => {
                // Out of file descriptors, say: not worth ending the run for.
                tracing::debug!("metrics: accept failed: {e}");
                std::thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

/// Reads one request from `stream` and answers it.
fn answer(mut stream: TcpStream, board: &Arc<Board>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() >= MAX_REQUEST_BYTES {
            return respond(&mut stream, 431, "text/plain", b"request too large\n");
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..n]);
    }
    let head = String::from_utf8_lossy(&request);
    let mut words = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method != "GET" {
        return respond(&mut stream, 405, "text/plain", b"only GET\n");
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => match super::metrics::render(board) {
            Ok(text) => respond(
                &mut stream,
                200,
                super::metrics::CONTENT_TYPE,
                text.as_bytes(),
            ),
            Err(_) => respond(&mut stream, 500, "text/plain", b"encoding failed\n"),
        },
        "/api/status" => {
            let json = board.status_json();
            respond(&mut stream, 200, "application/json", json.as_bytes())
        }
        "/" | "/index.html" => respond(
            &mut stream,
            200,
            "text/html; charset=utf-8",
            PAGE.as_bytes(),
        ),
        _ => respond(
            &mut stream,
            404,
            "text/plain",
            b"not found: try /, /metrics or /api/status\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}
