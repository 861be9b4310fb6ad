//! Events to a NATS JetStream stream (async-nats), at least once, in order, deduplicated by
//! the stream, from an outbox on disk ([`super::outbox`]).
//!
//! Contract (what a carrier's systems read):
//! - Stream `VISHGUARD_EVENTS` (`stream`), subjects `vishguard.events.<call id>`
//!   (`subject_prefix`; in the call id every character but letters, digits and `-_:@+=` is
//!   written `_`, as `.`, `*`, `>` and spaces have meanings in subjects; a token over 128
//!   characters is cut to its first 64, `=` and 16 hex digits of a hash of the id; the payload keeps the
//!   id as it is). Created at the first send if missing (file storage, `replicas`, `max_age_days`,
//!   a 2-minute duplicate window); an existing stream is used as it is.
//! - One JSON event per message, the shared record format with `schema_version`:
//!   `call_started`, `alert`, `call_ended` (the call's summary), and `transcript` when asked.
//! - Header `Nats-Msg-Id`: the alert's `alert_id`, `<call id>/call_started`,
//!   `<call id>/call_ended`, `<call id>/<party>/<start_s>/transcript`. JetStream drops a
//!   message whose id it stored within the duplicate window, so a re-send after a lost ack
//!   (a broker restart, a crash before the cursor moved) is stored once.
//!
//! A message is settled when JetStream acknowledges it (stored). A broker that is down or
//! restarting leaves the events in the outbox, retried with back-off, in order; a message the
//! server refuses for good (larger than its `max_payload`) goes to the dead letters.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use super::outbox::{default_max_pending, OutboxSink, Sent, Transport};
use crate::call::Event;

/// `[[sinks]] type = "nats"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs, e.g. "nats://10.0.0.5:4222" (several: the members of a cluster).
    pub servers: Vec<String>,
    /// Token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A NATS credentials file (JWT and nkey seed, `.creds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// TLS: the CA certificates (PEM) the servers' certificates must chain to; TLS is then
    /// required (a `tls://` URL asks for TLS with the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: this client's certificate chain (PEM); with `tls_client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// Mutual TLS: this client's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
    #[serde(default = "default_stream")]
    pub stream: String,
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Copies of the stream's data in a cluster (when vishguard creates it).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Events older than this leave the stream (days; when vishguard creates it).
    #[serde(default = "default_max_age_days")]
    pub max_age_days: f64,
    /// Where undelivered events wait (created if missing); one per running process.
    #[serde(default = "default_nats_outbox")]
    pub outbox: PathBuf,
    /// Undelivered events the outbox holds at most; beyond, they go to its dead letters.
    #[serde(default = "default_max_pending")]
    pub max_pending: u64,
    /// Also send each utterance's transcript.
    #[serde(default)]
    pub transcripts: bool,
    #[serde(default)]
    pub queue: super::QueueConfig,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) before they leave.
    #[serde(default)]
    pub redact: bool,
}

pub fn default_stream() -> String {
    "VISHGUARD_EVENTS".into()
}

pub fn default_subject_prefix() -> String {
    "vishguard.events".into()
}

fn default_replicas() -> usize {
    1
}

/// The longest `max_age_days` taken: a hundred years.
pub const MAX_AGE_DAYS: f64 = 36_525.0;

fn default_max_age_days() -> f64 {
    30.0
}

pub fn default_nats_outbox() -> PathBuf {
    PathBuf::from("vishguard-nats-outbox")
}

impl NatsConfig {
    /// A config with the defaults for these servers.
    pub fn for_servers(servers: Vec<String>) -> Self {
        Self {
            servers,
            token: None,
            credentials: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            stream: default_stream(),
            subject_prefix: default_subject_prefix(),
            replicas: default_replicas(),
            max_age_days: default_max_age_days(),
            outbox: default_nats_outbox(),
            max_pending: default_max_pending(),
            transcripts: false,
            queue: super::QueueConfig::default(),
            redact: false,
        }
    }

    /// The first bad value: (key, problem).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.servers.is_empty() {
            return Err(("servers".into(), "must name at least one server".into()));
        }
        for s in &self.servers {
            let has_host = s
                .parse::<async_nats::ServerAddr>()
                .is_ok_and(|a| !a.host().is_empty());
            if !has_host {
                return Err((
                    "servers".into(),
                    format!("{s:?} is not a NATS server address (nats://HOST:PORT)"),
                ));
            }
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.split('.').all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
                })
        };
        if !token_ok(&self.stream) || self.stream.contains('.') {
            return Err((
                "stream".into(),
                format!(
                    "{:?} is not a stream name (letters, digits, - and _)",
                    self.stream
                ),
            ));
        }
        if !token_ok(&self.subject_prefix) {
            return Err((
                "subject_prefix".into(),
                format!(
                    "{:?} is not a subject prefix (dot-separated letters, digits, - and _)",
                    self.subject_prefix
                ),
            ));
        }
        match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(_), None) => {
                return Err((
                    "tls_client_key".into(),
                    "is needed with tls_client_cert".into(),
                ))
            }
            (None, Some(_)) => {
                return Err((
                    "tls_client_cert".into(),
                    "is needed with tls_client_key".into(),
                ))
            }
            _ => {}
        }
        if self.outbox.as_os_str().is_empty() {
            return Err(("outbox".into(), "must name a folder".into()));
        }
        if self.token.as_deref() == Some("") {
            return Err((
                "token".into(),
                "is empty (leave it out to connect without one)".into(),
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err(("replicas".into(), "must be 1 to 5".into()));
        }
        // Bounded: JetStream keeps ages in nanoseconds (an i64, 292 years), and a value past
        // what a Duration holds had panicked the worker's stream setup.
        if !(self.max_age_days.is_finite()
            && self.max_age_days > 0.0
            && self.max_age_days <= MAX_AGE_DAYS)
        {
            return Err((
                "max_age_days".into(),
                format!("must be a positive number of days, at most {MAX_AGE_DAYS}"),
            ));
        }
        Ok(())
    }
}

/// Events a process must not publish after all: a relay worker that takes a call over skips
/// what the earlier owner stored, and one that hands a call back sends nothing more of it.
pub trait PublishFilter: Send + Sync {
    /// `msg_id`: the event's `Nats-Msg-Id`.
    fn skip(&self, call_id: &str, msg_id: Option<&str>) -> bool;
}

/// Starts the NATS sink: an [`OutboxSink`] of call openings, alerts, summaries (and
/// transcripts when asked), published to JetStream.
pub struct NatsSink;

impl NatsSink {
    pub fn start(config: &NatsConfig) -> Result<OutboxSink> {
        Self::start_filtered(config, None)
    }

    /// [`NatsSink::start`], skipping what `filter` says (settled as if sent).
    pub fn start_filtered(
        config: &NatsConfig,
        filter: Option<std::sync::Arc<dyn PublishFilter>>,
    ) -> Result<OutboxSink> {
        let mut transport = NatsTransport::new(config)?;
        transport.filter = filter;
        let takes: fn(&Event) -> bool = if config.transcripts {
            |_| true
        } else {
            |e| !matches!(e, Event::Transcript(_))
        };
        OutboxSink::start(
            &config.outbox,
            config.max_pending,
            takes,
            Box::new(transport),
        )
    }
}

/// The subject of a call under `prefix`: `<prefix>.<call id as one token>` (events, and the
/// relay's openings and audio).
pub fn call_subject(prefix: &str, call_id: &str) -> String {
    format!("{prefix}.{}", subject_token(call_id))
}

/// A call id as one subject token.
pub fn subject_token(call_id: &str) -> String {
    let t: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_:@+=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else if t.len() > MAX_TOKEN {
        // A subject has a limit (a server drops a client whose subject is over 4 KiB): a long
        // id keeps its start and a hash of the whole (FNV-1a, 64 bits).
        let hash = call_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("{}={hash:016x}", &t[..64])
    } else {
        t
    }
}

/// A call id's subject token is at most this long (characters) before it is shortened.
const MAX_TOKEN: usize = 128;

/// Publishes to JetStream, one message at a time, waiting for the stream's acknowledgement.
pub struct NatsTransport {
    config: NatsConfig,
    runtime: tokio::runtime::Runtime,
    client: Option<async_nats::Client>,
    stream_ready: bool,
    filter: Option<std::sync::Arc<dyn PublishFilter>>,
}

/// How long a publish waits for JetStream's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

impl NatsTransport {
    /// Checks the config; connects on the first send (a broker down at start only delays).
    pub fn new(config: &NatsConfig) -> Result<Self> {
        if let Err((key, problem)) = config.validate() {
            bail!("nats sink: {key}: {problem}");
        }
        check_files(config, "the NATS")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the NATS client's runtime")?;
        Ok(Self {
            config: config.clone(),
            runtime,
            client: None,
            stream_ready: false,
            filter: None,
        })
    }

    async fn connect(config: &NatsConfig) -> Result<async_nats::Client> {
        let options = connect_options(config, "vishguard")
            .await?
            .retry_on_initial_connect()
            // A broker restart is seconds: try again every 0.25 s, at most every 2 s.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(250 * attempts.clamp(1, 8) as u64)
            });
        Ok(options.connect(server_addrs(config)?).await?)
    }

    pub(crate) async fn ensure_stream(
        context: &jetstream::Context,
        config: &NatsConfig,
    ) -> Result<()> {
        context
            .get_or_create_stream(jetstream::stream::Config {
                name: config.stream.clone(),
                subjects: vec![format!("{}.>", config.subject_prefix)],
                storage: jetstream::stream::StorageType::File,
                num_replicas: config.replicas,
                max_age: Duration::from_secs_f64(config.max_age_days * 86_400.0),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", config.stream))?;
        Ok(())
    }
}

impl Transport for NatsTransport {
    fn describe(&self) -> String {
        format!("NATS stream {}", self.config.stream)
    }

    fn labels(&self) -> (&'static str, &'static str) {
        ("NATS outbox", "NATS dead letters")
    }

    fn send(&mut self, line: &str, key: Option<&str>) -> Sent {
        let value: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return Sent::Refused(None, format!("not JSON: {e}")),
        };
        let call = value
            .get("call_id")
            .or_else(|| value.get("id"))
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if self.filter.as_ref().is_some_and(|f| f.skip(call, key)) {
            return Sent::Delivered;
        }
        let subject = call_subject(&self.config.subject_prefix, call);
        let config = &self.config;
        let (client, stream_ready) = (&mut self.client, &mut self.stream_ready);
        let sent: Result<()> = self.runtime.block_on(async {
            if client.is_none() {
                *client = Some(Self::connect(config).await?);
            }
            let c = client.as_ref().expect("connected above");
            if line.len() as u64 > c.server_info().max_payload as u64
                && c.server_info().max_payload > 0
            {
                bail!(
                    "payload too large: {} bytes, the server takes {}",
                    line.len(),
                    c.server_info().max_payload
                );
            }
            let context = jetstream::new(c.clone());
            if !*stream_ready {
                Self::ensure_stream(&context, config).await?;
                *stream_ready = true;
            }
            let mut headers = async_nats::HeaderMap::new();
            if let Some(k) = key {
                headers.insert("Nats-Msg-Id", k);
            }
            let ack = context
                .publish_with_headers(subject, headers, line.to_owned().into())
                .await
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
            tokio::time::timeout(ACK_TIMEOUT, ack)
                .await
                .map_err(|_| anyhow::anyhow!("no acknowledgement in {} s", ACK_TIMEOUT.as_secs()))?
                .map_err(|e| anyhow::anyhow!("not stored: {e}"))?;
            Ok(())
        });
        match sent {
            Ok(()) => Sent::Delivered,
            Err(e) if e.to_string().starts_with("payload too large") => {
                Sent::Refused(None, e.to_string())
            }
            Err(e) => {
                // The stream may have been deleted meanwhile: look again next time.
                self.stream_ready = false;
                let connected = self.client.as_ref().is_some_and(|c| {
                    c.connection_state() == async_nats::connection::State::Connected
                });
                let why = if connected {
                    format!("{e:#}")
                } else {
                    // A request to a broker we are not connected to only says it timed out.
                    format!(
                        "not connected to NATS at {} ({e:#})",
                        self.config.servers.join(",")
                    )
                };
                Sent::Later(why, None)
            }
        }
    }
}

/// `vishguard alerts tail`: the events stored in the stream since `since` (all when none),
/// printed as JSON lines; with `follow`, waits for more.
pub fn tail(
    config: &NatsConfig,
    since: Option<std::time::SystemTime>,
    follow: bool,
    out: &mut dyn std::io::Write,
) -> Result<u64> {
    use futures_util::StreamExt;
    if let Err((key, problem)) = config.validate() {
        bail!("{key}: {problem}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = connect_options(config, "vishguard-tail")
            .await?
            .connect(server_addrs(config)?)
            .await
            .with_context(|| format!("connecting to {}", config.servers.join(",")))?;
        let context = jetstream::new(client);
        let mut waited = false;
        let stream = loop {
            match context.get_stream(&config.stream).await {
                Ok(s) => break s,
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(_)
                    ) && e.to_string().contains("not found") =>
                {
                    if !follow {
                        bail!(
                            "stream {} is not there yet: it is made when the first event is \
                             published (a worker's, or serve/listen --nats); --follow waits for it",
                            config.stream
                        );
                    }
                    if !waited {
                        eprintln!("waiting for stream {} to be made", config.stream);
                        waited = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    let hint = if e.to_string().contains("does not exist")
                        || e.to_string().contains("unavailable")
                    {
                        " (is nats-server started with JetStream: `nats-server -js -sd DIR`?)"
                    } else {
                        ""
                    };
                    bail!("stream {}: {e}{hint}", config.stream)
                }
            }
        };
        let deliver_policy = match since {
            Some(t) => jetstream::consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(t),
            },
            None => jetstream::consumer::DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config {
                deliver_policy,
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("reading stream {}: {e}", config.stream))?;
        let mut printed = 0u64;
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(500)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| anyhow::anyhow!("fetching: {e}"))?;
            let mut got = 0;
            while let Some(m) = batch.next().await {
                let m = m.map_err(|e| anyhow::anyhow!("fetching: {e}"))?;
                got += 1;
                // One JSON object per line, whoever published into the stream: what is not
                // JSON is skipped (it had reached the terminal byte for byte, escape
                // sequences included), JSON over several lines is put on one.
                match serde_json::from_slice::<serde_json::Value>(&m.payload) {
                    Ok(_) if !m.payload.iter().any(|&b| b == b'\n' || b == b'\r') => {
                        out.write_all(&m.payload)?;
                    }
                    Ok(v) => serde_json::to_writer(&mut *out, &v)?,
                    Err(e) => {
                        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                        tracing::warn!("event {seq} on {} is not JSON ({e}); skipped", m.subject);
                        continue;
                    }
                }
                out.write_all(b"\n")?;
                printed += 1;
            }
            out.flush()?;
            if got == 0 && !follow && left_to_deliver(&consumer).await? == 0 {
                return Ok(printed);
            }
        }
    })
}

/// Messages the consumer has yet to deliver.
async fn left_to_deliver(
    consumer: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
) -> Result<u64> {
    let mut c = consumer.clone();
    let info = c.info().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(info.num_pending)
}

/// Checks that the files a config names (credentials, TLS) are regular files: they are read
/// only at connect time, where a mistake shows as a failed connection. Errors begin with
/// `label` ("the NATS credentials file ...").
pub(crate) fn check_files(config: &NatsConfig, label: &str) -> Result<()> {
    for (what, path) in [
        ("credentials file", &config.credentials),
        ("TLS CA file", &config.tls_ca),
        ("TLS client certificate", &config.tls_client_cert),
        ("TLS client key", &config.tls_client_key),
    ] {
        if let Some(p) = path {
            let m =
                std::fs::metadata(p).with_context(|| format!("{label} {what} {}", p.display()))?;
            if !m.is_file() {
                bail!("{label} {what} {} is not a regular file", p.display());
            }
        }
    }
    Ok(())
}

/// What both the sink and `tail` connect with: the name, the token or credentials, TLS.
pub(crate) async fn connect_options(
    config: &NatsConfig,
    name: &str,
) -> Result<async_nats::ConnectOptions> {
    let mut options = async_nats::ConnectOptions::new().name(name);
    if let Some(t) = &config.token {
        options = options.token(t.clone());
    }
    if let Some(c) = &config.credentials {
        options = options
            .credentials_file(c)
            .await
            .with_context(|| format!("reading the NATS credentials {}", c.display()))?;
    }
    if let Some(ca) = &config.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.tls_client_cert, &config.tls_client_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

pub(crate) fn server_addrs(config: &NatsConfig) -> Result<Vec<async_nats::ServerAddr>> {
    config
        .servers
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("{s:?} is not a NATS server address"))
        })
        .collect()
}

/// Reads a server list: comma-separated URLs.
pub fn servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_become_one_subject_token() {
        assert_eq!(
            subject_token("a84b4c76e66710@pc33.atlanta.com"),
            "a84b4c76e66710@pc33_atlanta_com"
        );
        assert_eq!(subject_token("CA 1*>"), "CA_1__");
        assert_eq!(subject_token(""), "_");
        let long = subject_token(&"Y".repeat(100_000));
        assert_eq!(long.len(), 64 + 1 + 16);
        assert_ne!(long, subject_token(&"Y".repeat(100_001)));
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = NatsConfig::for_servers(vec!["nats://127.0.0.1:4222".into()]);
        assert!(c.validate().is_ok());
        c.stream = "A.B".into();
        assert_eq!(c.validate().unwrap_err().0, "stream");
        c.stream = "OK".into();
        c.subject_prefix = "a..b".into();
        assert_eq!(c.validate().unwrap_err().0, "subject_prefix");
        c.subject_prefix = "a.b".into();
        c.servers = vec!["http://[::1".into()];
        assert_eq!(c.validate().unwrap_err().0, "servers");
    }
}
