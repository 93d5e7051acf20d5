//! A local `nats-server` with JetStream, started as a child process on a free loopback
//! port with a store folder of its own: what the tests of the NATS source and sink, and
//! `dirigo bench nats`, run against. It can be stopped and started again on the same
//! port and store (a broker restart), and it is killed and its folder removed on drop.
//!
//! The program is looked up as `$DIRIGO_NATS_SERVER`, then `nats-server` on the `PATH`,
//! then `.tools/bin/nats-server` in the current folder or one above it (where
//! `scripts/provision` installs it).

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a started server gets to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a stopped server gets to exit before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server -js` child process.
///
/// ```no_run
/// use dirigo_operators::io::nats::LocalServer;
///
/// let server = LocalServer::start().expect("nats-server runs");
/// println!("connect to {}", server.url());
/// ```
#[derive(Debug)]
pub struct LocalServer {
    program: PathBuf,
    /// Arguments besides the port, address, JetStream and store ones.
    extra: Vec<String>,
    addr: SocketAddr,
    store: PathBuf,
    child: Option<Child>,
}

impl LocalServer {
    /// Starts a server on a free loopback port with a fresh store folder.
    ///
    /// # Errors
    /// When no `nats-server` is found or it does not start within [`START_TIMEOUT`].
    pub fn start() -> io::Result<Self> {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with `extra` arguments (`["--auth", TOKEN]`, say).
    ///
    /// # Errors
    /// As [`start`](Self::start).
    pub fn start_with(extra: &[&str]) -> io::Result<Self> {
        let program = find_program().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no nats-server: not in $DIRIGO_NATS_SERVER, on the PATH or in .tools/bin (run scripts/provision)",
            )
        })?;
        let store = fresh_store()?;
        let mut last_error = None;
        // A port found free may be taken before the server binds it: try a few.
        for _ in 0..3 {
            let addr = free_port()?;
            let mut server = Self {
                program: program.clone(),
                extra: extra.iter().map(|arg| (*arg).to_owned()).collect(),
                addr,
                store: store.clone(),
                child: None,
            };
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(e) => {
                    server.store = PathBuf::new(); // kept for the next try
                    last_error = Some(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&store);
        Err(last_error.unwrap_or_else(|| io::Error::other("nats-server did not start")))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store folder.
    pub fn store(&self) -> &Path {
        &self.store
    }

    /// Stops the server as an operator would (`SIGTERM`: it flushes its store and
    /// exits), and waits for it; one that is still running after [`STOP_TIMEOUT`] is
    /// killed.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: `kill` only sends a signal; `pid` is our own child, not yet waited
            // for, so the id cannot have been reused by another process.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server at once (`SIGKILL`, as a crash would) and waits for it: what it
    /// acknowledged but had not written to its files yet may be lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (after [`stop`](Self::stop)) on the same port and store,
    /// and waits until it accepts connections.
    ///
    /// # Errors
    /// When it does not start within [`START_TIMEOUT`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let mut child = Command::new(&self.program)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .arg("-sd")
            .arg(&self.store)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited at start ({status}) on port {}",
                    self.program.display(),
                    self.addr.port()
                )));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("nats-server took no connection within {START_TIMEOUT:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.kill();
        if !self.store.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.store);
        }
    }
}

/// The `nats-server` program (see the module docs).
pub fn find_program() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DIRIGO_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    let here = std::env::current_dir().ok()?;
    here.ancestors()
        .map(|dir| dir.join(".tools/bin/nats-server"))
        .find(|candidate| candidate.is_file())
}

fn free_port() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn fresh_store() -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "dirigo-nats-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
