//! `[app.source.nats]` and `[app.sink.nats]`: where a NATS source reads and a NATS sink
//! writes, how they log in, and their bounds; checked when the file loads, and turned
//! into the operators' options. Every key is in `configs/README.md`.
//!
//! Credentials come from the section (`token`, `user` and `password`, or `creds_file`)
//! or, when it names none, from the environment: `NATS_TOKEN`, `NATS_USER` with
//! `NATS_PASSWORD`, or `NATS_CREDS` (a `.creds` file). They are never logged.

use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use dirigo_operators::io::nats::{
    Credentials, EventTime, NatsConnect, NatsSinkOptions, NatsSourceOptions, Secret as NatsSecret,
    SubjectTemplate, TlsOptions,
};
use serde::Deserialize;
use toml::Spanned;

use super::{absent, within, Secret};

/// `[app.source.nats]` or `[app.sink.nats]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSection {
    /// The server: `nats://HOST:PORT` (or `tls://`), several separated by commas.
    pub url: Spanned<String>,
    /// The JetStream stream read or written.
    pub stream: Spanned<String>,
    /// Source: the subjects read (a filter; `{partition}` for partition `p`); sink: the
    /// subject written (`{field}` for a record's field).
    pub subject: Option<Spanned<String>>,
    /// Source: the durable consumer's name (`NAME-p` per partition when several).
    pub consumer: Option<Spanned<String>>,
    /// Create the stream (and the source's consumers) when missing (default false).
    pub create: Option<bool>,
    /// A token to log in with.
    pub token: Option<Spanned<Secret>>,
    /// A user to log in as (with `password`).
    pub user: Option<Spanned<String>>,
    /// The user's password.
    pub password: Option<Spanned<Secret>>,
    /// A `.creds` file (user JWT and NKey seed), relative to the config's folder.
    pub creds_file: Option<Spanned<String>>,
    /// Refuse to connect without TLS (default false).
    pub tls_required: Option<bool>,
    /// A PEM file of certificate authorities to trust.
    pub tls_ca_file: Option<Spanned<String>>,
    /// A PEM client certificate (with `tls_key_file`).
    pub tls_cert_file: Option<Spanned<String>>,
    /// The client certificate's key.
    pub tls_key_file: Option<Spanned<String>>,
    /// Source: `field` (the record's `time`, the default) or `published` (when the
    /// server stored the message).
    pub event_time: Option<Spanned<EventTimeName>>,
    /// Source: end once no message came for this long, ms (default: never).
    pub end_after_idle_ms: Option<Spanned<u64>>,
    /// Source: the most messages one pull asks for (default 256).
    pub fetch_batch: Option<Spanned<usize>>,
    /// Sink: the most publishes awaiting the server's acknowledgement (default 4096).
    pub max_in_flight: Option<Spanned<usize>>,
    /// Sink: how long a publish waits for its acknowledgement before it is sent again,
    /// ms (default 5000).
    pub publish_timeout_ms: Option<Spanned<u64>>,
    /// Sink: how long a message is retried before it counts as failed, ms (default
    /// 60 000).
    pub retry_for_ms: Option<Spanned<u64>>,
}

/// Where a NATS source's event times come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventTimeName {
    /// The record's `time`.
    Field,
    /// When the server stored the message.
    Published,
}

/// A stream or consumer name as JetStream accepts it.
fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
}

fn subject_ok(subject: &str) -> bool {
    !subject.is_empty()
        && !subject.contains(char::is_whitespace)
        && subject.split('.').all(|token| !token.is_empty())
}

impl NatsSection {
    /// Checks a source's section; `partitions` is the source's partition count.
    pub fn check_source(&self, partitions: u32) -> Result<(), (Range<usize>, String)> {
        self.check_common()?;
        let why = "only NATS sinks publish";
        absent(&self.max_in_flight, "max_in_flight", why)?;
        absent(&self.publish_timeout_ms, "publish_timeout_ms", why)?;
        absent(&self.retry_for_ms, "retry_for_ms", why)?;
        match &self.consumer {
            None => {
                return Err((
                    self.stream.span(),
                    "a `consumer` name for the NATS source".into(),
                ))
            }
            Some(consumer) if !name_ok(consumer.get_ref()) => {
                return Err((
                    consumer.span(),
                    "a consumer name without dots, wildcards, slashes or white space".into(),
                ))
            }
            Some(_) => {}
        }
        let templated = self
            .subject
            .as_ref()
            .is_some_and(|subject| subject.get_ref().contains("{partition}"));
        if partitions > 1 && !templated {
            let span = self
                .subject
                .as_ref()
                .map_or(self.stream.span(), Spanned::span);
            return Err((
                span,
                format!(
                    "a `subject` with {{partition}} in it (like \"orders.{{partition}}\"): the source has {partitions} partitions, one subject each"
                ),
            ));
        }
        if let Some(subject) = &self.subject {
            if !subject_ok(&subject.get_ref().replace("{partition}", "0")) {
                return Err((
                    subject.span(),
                    "a subject like \"orders.{partition}\" or \"orders.>\"".into(),
                ));
            }
        }
        if self.create == Some(true) && self.subject.is_none() {
            return Err((
                self.stream.span(),
                "a `subject` for the stream that `create = true` makes".into(),
            ));
        }
        within(
            &self.end_after_idle_ms,
            1..=86_400_000,
            "milliseconds (up to a day)",
        )?;
        within(&self.fetch_batch, 1..=65_536, "a number of messages")?;
        Ok(())
    }

    /// Checks a sink's section.
    pub fn check_sink(&self) -> Result<(), (Range<usize>, String)> {
        self.check_common()?;
        let why = "only NATS sources read through a consumer";
        absent(&self.consumer, "consumer", why)?;
        absent(&self.event_time, "event_time", why)?;
        absent(&self.end_after_idle_ms, "end_after_idle_ms", why)?;
        absent(&self.fetch_batch, "fetch_batch", why)?;
        match &self.subject {
            None => {
                return Err((
                    self.stream.span(),
                    "a `subject` for the NATS sink to publish to".into(),
                ))
            }
            Some(subject) => {
                let template =
                    SubjectTemplate::parse(subject.get_ref()).map_err(|e| (subject.span(), e))?;
                if !subject_ok(&template.wildcard()) || template.wildcard().contains('>') {
                    return Err((
                        subject.span(),
                        "a subject like \"out\" or \"out.{key}\"".into(),
                    ));
                }
            }
        }
        within(&self.max_in_flight, 1..=1_000_000, "a number of messages")?;
        within(
            &self.publish_timeout_ms,
            1..=600_000,
            "milliseconds (up to 10 minutes)",
        )?;
        within(
            &self.retry_for_ms,
            1..=86_400_000,
            "milliseconds (up to a day)",
        )?;
        Ok(())
    }

    fn check_common(&self) -> Result<(), (Range<usize>, String)> {
        let url = self.url.get_ref();
        if url.trim().is_empty() || url.contains(char::is_whitespace) {
            return Err((
                self.url.span(),
                "a server URL like \"nats://127.0.0.1:4222\"".into(),
            ));
        }
        if !name_ok(self.stream.get_ref()) {
            return Err((
                self.stream.span(),
                "a stream name without dots, wildcards, slashes or white space".into(),
            ));
        }
        let given = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.creds_file.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() > 1 {
            let span = self
                .token
                .as_ref()
                .map(Spanned::span)
                .or(self.user.as_ref().map(Spanned::span))
                .unwrap_or(self.url.span());
            return Err((
                span,
                "one kind of credentials: a `token`, a `user` and `password`, or a `creds_file`"
                    .into(),
            ));
        }
        match (&self.user, &self.password) {
            (Some(user), None) => return Err((user.span(), "a `password` with the `user`".into())),
            (None, Some(password)) => {
                return Err((password.span(), "a `user` with the `password`".into()))
            }
            _ => {}
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), None) => {
                return Err((
                    cert.span(),
                    "a `tls_key_file` with the `tls_cert_file`".into(),
                ))
            }
            (None, Some(key)) => {
                return Err((
                    key.span(),
                    "a `tls_cert_file` with the `tls_key_file`".into(),
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The server, credentials (from the section or the environment) and TLS settings;
    /// files are relative to `base_dir`.
    pub fn connect(&self, base_dir: &Path) -> NatsConnect {
        let env = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        let credentials = if let Some(token) = &self.token {
            Credentials::Token(NatsSecret::new(&token.get_ref().0))
        } else if let (Some(user), Some(password)) = (&self.user, &self.password) {
            Credentials::UserPassword {
                user: user.get_ref().clone(),
                password: NatsSecret::new(&password.get_ref().0),
            }
        } else if let Some(file) = &self.creds_file {
            Credentials::CredsFile(base_dir.join(file.get_ref()))
        } else if let Some(token) = env("NATS_TOKEN") {
            Credentials::Token(NatsSecret::new(token))
        } else if let (Some(user), Some(password)) = (env("NATS_USER"), env("NATS_PASSWORD")) {
            Credentials::UserPassword {
                user,
                password: NatsSecret::new(password),
            }
        } else if let Some(file) = env("NATS_CREDS") {
            Credentials::CredsFile(file.into())
        } else {
            Credentials::None
        };
        let file =
            |path: &Option<Spanned<String>>| path.as_ref().map(|p| base_dir.join(p.get_ref()));
        NatsConnect::new(self.url.get_ref().clone())
            .credentials(credentials)
            .tls(TlsOptions {
                required: self.tls_required.unwrap_or(false),
                ca_file: file(&self.tls_ca_file),
                client_cert: file(&self.tls_cert_file).zip(file(&self.tls_key_file)),
            })
    }

    /// A checked source section's options.
    pub fn source_options(&self, base_dir: &Path, partitions: u32) -> NatsSourceOptions {
        let consumer = self
            .consumer
            .as_ref()
            .map_or_else(String::new, |c| c.get_ref().clone());
        let mut options = NatsSourceOptions::new(
            self.connect(base_dir),
            self.stream.get_ref().clone(),
            consumer,
        );
        options.subject = self.subject.as_ref().map(|s| s.get_ref().clone());
        options.partitions = partitions;
        options.create = self.create.unwrap_or(false);
        options.event_time = match self.event_time.as_ref().map(|e| *e.get_ref()) {
            Some(EventTimeName::Published) => EventTime::Published,
            Some(EventTimeName::Field) | None => EventTime::Field,
        };
        options.end_after_idle = self
            .end_after_idle_ms
            .as_ref()
            .map(|ms| Duration::from_millis(*ms.get_ref()));
        if let Some(batch) = &self.fetch_batch {
            options.fetch_batch = *batch.get_ref();
        }
        options
    }

    /// A checked sink section's options.
    pub fn sink_options(&self, base_dir: &Path) -> Result<NatsSinkOptions, String> {
        let subject = self.subject.as_ref().ok_or("a subject for the NATS sink")?;
        let mut options = NatsSinkOptions::new(
            self.connect(base_dir),
            self.stream.get_ref().clone(),
            SubjectTemplate::parse(subject.get_ref())?,
        );
        options.create = self.create.unwrap_or(false);
        if let Some(most) = &self.max_in_flight {
            options.max_in_flight = *most.get_ref();
        }
        if let Some(ms) = &self.publish_timeout_ms {
            options.publish_timeout = Duration::from_millis(*ms.get_ref());
        }
        if let Some(ms) = &self.retry_for_ms {
            options.retry_for = Duration::from_millis(*ms.get_ref());
        }
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    const APP: &str = "[[app]]\nname = \"a\"\n\n[app.source]\nkind = \"nats\"\npartitions = 2\n\n[app.source.nats]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"IN\"\n";

    fn error(text: &str) -> String {
        Config::parse(Path::new("t.toml"), text)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn a_nats_pipeline_parses_and_builds_its_options() {
        let text = format!(
            "{APP}consumer = \"c\"\nsubject = \"in.{{partition}}\"\nevent_time = \"published\"\nfetch_batch = 64\n\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\n\n[app.sink]\nkind = \"nats\"\n\n[app.sink.nats]\nurl = \"nats://127.0.0.1:4222\"\nstream = \"OUT\"\nsubject = \"out.{{key}}\"\nmax_in_flight = 16\ntoken = \"t0k3n\"\n"
        );
        let config = Config::parse(Path::new("t.toml"), &text).unwrap();
        let source = config.apps[0].source().unwrap().get_ref();
        let nats = source.nats.as_ref().unwrap().get_ref();
        let options = nats.source_options(Path::new("."), source.nats_partitions());
        assert_eq!(options.subject_of(1).as_deref(), Some("in.1"));
        assert_eq!(options.consumer_of(1), "c-1");
        assert_eq!(options.fetch_batch, 64);
        let sink = config.apps[0].sink.nats.as_ref().unwrap().get_ref();
        let options = sink.sink_options(Path::new(".")).unwrap();
        assert_eq!(options.max_in_flight, 16);
        assert!(!format!("{options:?}").contains("t0k3n"));
    }

    #[test]
    fn nats_mistakes_point_at_their_place() {
        // Two partitions, no {partition} in the subject.
        let e = error(&format!("{APP}consumer = \"c\"\nsubject = \"in\"\n"));
        assert!(
            e.starts_with("t.toml:12:11:") && e.contains("{partition}"),
            "{e}"
        );
        // No consumer.
        let e = error(APP);
        assert!(
            e.starts_with("t.toml:10:10:") && e.contains("consumer"),
            "{e}"
        );
        // A stream name with a dot.
        let e = error(&APP.replace("\"IN\"", "\"a.b\""));
        assert!(
            e.starts_with("t.toml:10:10:") && e.contains("stream name"),
            "{e}"
        );
        // A key of the other side.
        let e = error(&format!(
            "{APP}consumer = \"c\"\nsubject = \"in.{{partition}}\"\nmax_in_flight = 3\n"
        ));
        assert!(
            e.starts_with("t.toml:13:17:") && e.contains("only NATS sinks"),
            "{e}"
        );
        // A user without a password.
        let e = error(&format!(
            "{APP}consumer = \"c\"\nsubject = \"in.{{partition}}\"\nuser = \"u\"\n"
        ));
        assert!(
            e.starts_with("t.toml:13:8:") && e.contains("password"),
            "{e}"
        );
        // An unknown key.
        let e = error(&format!("{APP}consumer = \"c\"\nsubjects = \"x\"\n"));
        assert!(e.starts_with("t.toml:12:1:"), "{e}");
        // A nats table for another kind of source.
        let e = error(&APP.replace("kind = \"nats\"\npartitions = 2", "kind = \"generator\""));
        assert!(e.contains("only `nats` sources"), "{e}");
        // A sink without its table, and one with an unclosed field.
        let sink = "[[app]]\nname = \"a\"\n\n[[app.operator]]\nname = \"m\"\nkind = \"map\"\n\n[app.sink]\nkind = \"nats\"\n";
        let e = error(sink);
        assert!(
            e.starts_with("t.toml:2:8:") && e.contains("[app.sink.nats]"),
            "{e}"
        );
        let e = error(&format!("{sink}\n[app.sink.nats]\nurl = \"nats://h:1\"\nstream = \"S\"\nsubject = \"out.{{key\"\n"));
        assert!(e.starts_with("t.toml:14:11:") && e.contains('}'), "{e}");
    }
}
