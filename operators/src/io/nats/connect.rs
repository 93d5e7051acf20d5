//! How a NATS source or sink reaches its server: the URL, the credentials and TLS
//! options, the connection's deadlines and its reconnect backoff. Credentials are kept in
//! [`Secret`]s, whose `Debug` shows nothing, and URLs are shown without their user part
//! ([`redacted_url`]), so no log line or error message carries a credential.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long connecting (TCP, TLS and the NATS handshake) may take at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request to the server (a stream or consumer lookup) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The first pause before reconnecting after the connection was lost; it doubles with
/// every failed try, up to [`MAX_RECONNECT_DELAY`]. The client retries for ever: a
/// server that comes back is found again within that longest pause.
pub const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(50);

/// The longest pause between two reconnect tries.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// A credential: its `Debug` shows no character of it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// A secret holding `text`.
    pub fn new(text: impl AsRef<str>) -> Self {
        Self(Arc::from(text.as_ref()))
    }

    fn reveal(&self) -> String {
        self.0.to_string()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

/// How the client proves who it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (or those in the URL's user part).
    #[default]
    None,
    /// A token.
    Token(Secret),
    /// A user name and a password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// A `.creds` file (a user JWT and its NKey seed), as `nsc` writes them.
    CredsFile(PathBuf),
}

/// TLS settings: all off by default (the URL's scheme `tls://` turns TLS on too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// Refuse a connection without TLS.
    pub required: bool,
    /// A PEM file of the certificate authorities to trust (besides the system's).
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate and its key, for servers that ask for one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// Where a NATS server is and how to log in to it.
///
/// ```
/// use dirigo_operators::io::nats::{Credentials, NatsConnect, Secret};
///
/// let connect = NatsConnect::new("nats://127.0.0.1:4222")
///     .credentials(Credentials::Token(Secret::new("s3cret")));
/// assert!(!format!("{connect:?}").contains("s3cret"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConnect {
    /// The server, `nats://HOST:PORT` (or `tls://`); several may be given separated by
    /// commas.
    pub url: String,
    /// The credentials.
    pub credentials: Credentials,
    /// TLS settings.
    pub tls: TlsOptions,
}

impl NatsConnect {
    /// The server at `url`, without credentials or TLS settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            credentials: Credentials::None,
            tls: TlsOptions::default(),
        }
    }

    /// With `credentials`.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// With `tls`.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// The URL as it may be shown: without a user part.
    pub fn shown_url(&self) -> String {
        redacted_url(&self.url)
    }

    /// Connects (within [`CONNECT_TIMEOUT`]); once connected, the client reconnects on
    /// its own with backoff whenever the connection is lost. `who` names the connection
    /// in the server's monitoring and in logs.
    pub(crate) async fn connect(&self, who: &str) -> Result<async_nats::Client, String> {
        let shown = self.shown_url();
        let log_as = format!("{who} ({shown})");
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("dirigo {who}"))
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .max_reconnects(None)
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let log_as = log_as.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(connection = %log_as, "NATS: connected")
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!(connection = %log_as, "NATS: disconnected; reconnecting")
                        }
                        other => tracing::debug!(connection = %log_as, event = %other, "NATS"),
                    }
                }
            });
        options = match &self.credentials {
            Credentials::None => options,
            Credentials::Token(token) => options.token(token.reveal()),
            Credentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.reveal())
            }
            Credentials::CredsFile(path) => options.credentials_file(path).await.map_err(|e| {
                format!(
                    "cannot read the NATS credentials file {}: {e}",
                    path.display()
                )
            })?,
        };
        if self.tls.required {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .url
            .split(',')
            .map(|one| one.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("expected a NATS URL like nats://HOST:PORT, found {shown:?}"))?;
        let connecting = options.connect(servers);
        match tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), connecting).await {
            Ok(Ok(client)) => Ok(client),
            // The client's errors name the address it tried, never a credential.
            Ok(Err(e)) => Err(format!("cannot connect to the NATS server at {shown}: {e}")),
            Err(_) => Err(format!(
                "cannot connect to the NATS server at {shown}: no answer within {CONNECT_TIMEOUT:?}"
            )),
        }
    }
}

/// The pause before reconnect try `attempts` (see [`FIRST_RECONNECT_DELAY`]).
fn reconnect_delay(attempts: usize) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16) as u32;
    FIRST_RECONNECT_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RECONNECT_DELAY)
}

/// `url` with any user part (`user:password@`, `token@`) replaced by `***@`, for logs
/// and error messages.
pub fn redacted_url(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let (scheme, rest) = match one.find("://") {
                Some(at) => one.split_at(at + 3),
                None => ("", one),
            };
            match rest.rfind('@') {
                Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Says, from a NATS thread, whether its source or sink is ready: `Ok` once it is, or
/// why it cannot start.
pub(crate) type Ready = flume::Sender<Result<(), String>>;

impl NatsConnect {
    /// Starts the thread `thread` that holds a source's or sink's client: a
    /// single-threaded tokio runtime, a client connected as `who`, then `work` with that
    /// client; waits until `work` says on its [`Ready`] that it is ready (or connecting
    /// failed), and returns what it said.
    ///
    /// # Errors
    /// When the thread or its runtime cannot start, connecting fails, or `work` says why
    /// it cannot start.
    pub(crate) fn start_thread<W, F>(
        &self,
        thread: String,
        who: String,
        work: W,
    ) -> Result<(), String>
    where
        W: FnOnce(async_nats::Client, Ready) -> F + Send + 'static,
        F: std::future::Future<Output = ()>,
    {
        let (ready_tx, ready_rx) = flume::bounded::<Result<(), String>>(1);
        let connect = self.clone();
        std::thread::Builder::new()
            .name(thread)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the NATS thread: {e}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match connect.connect(&who).await {
                        Ok(client) => work(client, ready_tx).await,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })
            .map_err(|e| format!("cannot start the NATS thread: {e}"))?;
        ready_rx
            .recv()
            .map_err(|_| "the NATS thread ended before connecting".to_owned())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redacted_url("nats://u:p4ss@127.0.0.1:4222"),
            "nats://***@127.0.0.1:4222"
        );
        assert_eq!(
            redacted_url("tok@host:1,nats://h:2"),
            "***@host:1,nats://h:2"
        );
        assert_eq!(redacted_url("nats://h:2"), "nats://h:2");
    }

    #[test]
    fn secrets_do_not_show() {
        let credentials = Credentials::UserPassword {
            user: "me".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }

    #[test]
    fn reconnect_backoff_doubles_up_to_its_cap() {
        assert_eq!(reconnect_delay(1), FIRST_RECONNECT_DELAY);
        assert_eq!(reconnect_delay(2), FIRST_RECONNECT_DELAY * 2);
        assert_eq!(reconnect_delay(100), MAX_RECONNECT_DELAY);
    }
}
