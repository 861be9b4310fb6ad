//! Calls relayed over NATS JetStream between the processes of one deployment: `serve --role
//! ingest` takes calls from the network and publishes their audio; `serve --role worker` claims
//! calls from the broker, hears them, and publishes the events (the NATS sink,
//! [`crate::sinks::nats`]). The broker does all the coordination (durable consumers, acks,
//! redelivery); vishguard adds no cluster protocol of its own.
//!
//! Contract (stream `VISHGUARD_AUDIO`, `audio_stream`; prefix `vishguard`, `subject_prefix`):
//! - `vishguard.calls.<call>`: one message per call, its opening: the shared
//!   [`crate::call::Call`] record as JSON. `Vishguard-Instance`: a ULID new for each call the
//!   ingest takes (so a call id used again is another call), `Nats-Msg-Id: <call id>/<instance>/open`. Workers share the durable consumer
//!   `vishguard-workers` (`consumer`) on these subjects: whoever takes the message owns the
//!   call, keeps the message in progress while it hears the call, and acknowledges it once
//!   the call's `call_ended` is stored in the events stream. A worker that dies stops
//!   renewing it; after `claim_timeout_s` JetStream gives it to another worker.
//! - `vishguard.audio.<call>`: the call's audio and close, in order.
//!   Headers: `Vishguard-Call-Id` (the id as it is), `Vishguard-Instance`, `Vishguard-Kind`
//!   (`audio` or `close`); for audio `Vishguard-Party` (index into the call's parties),
//!   `Vishguard-Seq` (per party, from 0), `Vishguard-Offset` (seconds of audio time of the
//!   chunk's first sample), and `Nats-Msg-Id: <call id>/<instance>/<party>/<seq>`
//!   (`<call id>/<instance>/close` for the close). The body of
//!   an audio message is 16-bit signed little-endian mono PCM at the party's `sample_rate`.
//! - `<call>` is the call id as one subject token ([`crate::sinks::nats::subject_token`]).
//!
//! A worker that takes a call over replays its audio from the start (kept for
//! `audio_max_age_s`), so its context is whole, and skips the events the earlier owner had
//! stored already (read from the events stream by message id): alert ids are stable, so
//! nothing is sent twice.

pub mod ingest;
pub mod spool;
pub mod wire;
pub mod worker;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream;
use serde::{Deserialize, Serialize};

use crate::sinks::nats::NatsConfig;

/// The relay's counters, for `/metrics` (both roles fill the ones they use).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Ingest: messages the broker stored; calls published.
    pub published: AtomicU64,
    pub calls_published: AtomicU64,
    /// Ingest: messages waiting in the spool now, and their bytes.
    pub spooled: AtomicU64,
    pub spool_bytes: AtomicU64,
    /// Ingest: audio chunks shed (the spool at its bound, or the publisher too far behind).
    pub shed_chunks: AtomicU64,
    /// Ingest: the broker took the last publish (1) or is away (0).
    pub broker_up: AtomicBool,
    /// Worker: calls claimed, of them taken over from another worker, and finished (their
    /// summary stored and the claim acknowledged); calls held now.
    pub calls_claimed: AtomicU64,
    pub calls_taken_over: AtomicU64,
    pub calls_finished: AtomicU64,
    pub calls_held: AtomicU64,
    /// Worker: call openings no worker has claimed yet (the shared consumer's backlog):
    /// rising means the workers cannot keep up.
    pub claims_waiting: AtomicU64,
    /// Worker: audio messages stored in the broker and not yet read, over the calls held (a
    /// worker that falls behind live calls shows it here first).
    pub audio_behind: AtomicU64,
    /// Worker: audio chunks seen twice (skipped), and messages that were not the relay's.
    pub duplicate_chunks: AtomicU64,
    pub malformed: AtomicU64,
}

impl RelayStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a `serve` process does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Takes calls and hears them (one process).
    #[default]
    All,
    /// Takes calls from the network and publishes their audio to `[nats]`.
    Ingest,
    /// Claims calls from `[nats]`, hears them, publishes events.
    Worker,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["all", "ingest", "worker"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Ingest => "ingest",
            Role::Worker => "worker",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Role::All),
            "ingest" => Ok(Role::Ingest),
            "worker" => Ok(Role::Worker),
            _ => Err(format!("{s:?} is not a role (all, ingest, worker)")),
        }
    }
}

/// `[nats]`: the broker that joins ingest and workers, and the streams on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Server URLs, e.g. "nats://10.0.0.5:4222" (several: the members of a cluster).
    pub servers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A NATS credentials file (JWT and nkey seed, `.creds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credentials: Option<PathBuf>,
    /// TLS: the CA certificates (PEM) the servers' certificates must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: this client's certificate chain and key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
    /// The stream of call openings and audio.
    pub audio_stream: String,
    /// Subjects `<prefix>.calls.<call>` and `<prefix>.audio.<call>`.
    pub subject_prefix: String,
    /// The workers' shared durable consumer of call openings.
    pub consumer: String,
    /// Copies of each stream's data in a cluster (when vishguard creates the stream).
    pub replicas: usize,
    /// How long audio stays in the stream (s): a call longer than this cannot be taken over
    /// from its start.
    pub audio_max_age_s: f64,
    /// A worker that has not renewed its claim on a call for this long has lost it (s).
    pub claim_timeout_s: f64,
    /// A claimed call whose audio has not moved for this long is read again from where it
    /// stood, and closed if it stays still as long again (s): its ingest died. Time the
    /// broker is out of reach does not count.
    pub call_idle_s: f64,
    /// Worker: calls held at once; the rest wait in the broker for a worker with room. Size
    /// it to what the machine hears in real time (`vishguard bench rtp`).
    pub worker_max_calls: usize,
    /// Ingest: where audio waits while the broker is away (created if missing).
    pub spool: PathBuf,
    /// Ingest: the spool's bound (MiB); audio beyond it is shed and counted.
    pub spool_max_mb: u64,
    /// Ingest: a party's audio goes out in messages of this many milliseconds (chunks that
    /// follow on are joined): fewer, larger messages for the broker, for at most this much
    /// added latency. 0: each chunk as it comes (20 ms from RTP).
    pub coalesce_ms: u64,
    /// Worker: where events not yet stored wait (the NATS sink's outbox).
    pub events_outbox: PathBuf,
    /// Worker: the events stream and its subject prefix (as the NATS sink's).
    pub events_stream: String,
    pub events_subject_prefix: String,
    /// Events older than this leave the events stream (days; when vishguard creates it).
    pub events_max_age_days: f64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            token: None,
            credentials: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            audio_stream: "VISHGUARD_AUDIO".into(),
            subject_prefix: "vishguard".into(),
            consumer: "vishguard-workers".into(),
            replicas: 1,
            audio_max_age_s: 3600.0,
            claim_timeout_s: 10.0,
            call_idle_s: 60.0,
            worker_max_calls: 8,
            spool: PathBuf::from("vishguard-ingest-spool"),
            spool_max_mb: 1024,
            coalesce_ms: 0,
            events_outbox: crate::sinks::nats::default_nats_outbox(),
            events_stream: crate::sinks::nats::default_stream(),
            events_subject_prefix: crate::sinks::nats::default_subject_prefix(),
            events_max_age_days: 30.0,
        }
    }
}

impl RelayConfig {
    /// Nothing set (`--print-config` leaves the section out).
    pub fn is_unset(&self) -> bool {
        self == &Self::default()
    }

    /// The connection (servers, credentials, TLS) and the events stream, as the NATS sink's
    /// config: the worker publishes its events through that sink.
    pub fn events(&self) -> NatsConfig {
        let mut c = NatsConfig::for_servers(self.servers.clone());
        c.token = self.token.clone();
        c.credentials = self.credentials.clone();
        c.tls_ca = self.tls_ca.clone();
        c.tls_client_cert = self.tls_client_cert.clone();
        c.tls_client_key = self.tls_client_key.clone();
        c.stream = self.events_stream.clone();
        c.subject_prefix = self.events_subject_prefix.clone();
        c.replicas = self.replicas;
        c.outbox = self.events_outbox.clone();
        c.max_age_days = self.events_max_age_days;
        c
    }

    /// The first bad value: (key, problem). Keys are relative to `[nats]`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.events().validate().map_err(|(key, problem)| {
            let key = match key.as_str() {
                "stream" => "events_stream".into(),
                "subject_prefix" => "events_subject_prefix".into(),
                "outbox" => "events_outbox".into(),
                "max_age_days" => "events_max_age_days".into(),
                _ => key,
            };
            (key, problem)
        })?;
        let mut audio = self.events();
        audio.stream = self.audio_stream.clone();
        audio.subject_prefix = self.subject_prefix.clone();
        audio.validate().map_err(|(key, problem)| {
            let key = match key.as_str() {
                "stream" => "audio_stream".into(),
                _ => key,
            };
            (key, problem)
        })?;
        if self.audio_stream == self.events_stream {
            return Err((
                "audio_stream".into(),
                "must differ from events_stream".into(),
            ));
        }
        let events = &self.events_subject_prefix;
        for ours in [self.calls_prefix(), self.audio_prefix()] {
            if events == &ours || events.starts_with(&format!("{ours}.")) {
                return Err((
                    "events_subject_prefix".into(),
                    format!("{events:?} overlaps the audio stream's subjects ({ours}.>)"),
                ));
            }
            if ours.starts_with(&format!("{events}.")) {
                return Err((
                    "subject_prefix".into(),
                    format!("{ours}.> lies inside the events' subjects ({events}.>)"),
                ));
            }
        }
        // The server refuses names over 255 bytes, and a worker had retried that
        // refusal every second for good.
        if self.consumer.is_empty()
            || self.consumer.len() > 255
            || !self
                .consumer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err((
                "consumer".into(),
                format!(
                    "{:?} is not a consumer name (1 to 255 letters, digits, - and _)",
                    self.consumer.chars().take(64).collect::<String>()
                ),
            ));
        }
        if self.spool.as_os_str().is_empty() {
            return Err(("spool".into(), "must name a folder".into()));
        }
        for (key, v, min) in [
            ("audio_max_age_s", self.audio_max_age_s, 60.0),
            ("claim_timeout_s", self.claim_timeout_s, 1.0),
            ("call_idle_s", self.call_idle_s, 1.0),
        ] {
            if !(v.is_finite() && v >= min && v <= 30.0 * 86_400.0) {
                return Err((
                    key.into(),
                    format!("must be a number of seconds from {min} to 30 days, not {v}"),
                ));
            }
        }
        if self.coalesce_ms > 5_000 {
            return Err((
                "coalesce_ms".into(),
                format!("must be 0 to 5000 ms, not {}", self.coalesce_ms),
            ));
        }
        if self.worker_max_calls == 0 || self.worker_max_calls > 100_000 {
            return Err(("worker_max_calls".into(), "must be 1 to 100000".into()));
        }
        if self.spool_max_mb == 0 || self.spool_max_mb > 1 << 20 {
            return Err((
                "spool_max_mb".into(),
                format!("must be 1 to 1048576 (1 TiB), not {}", self.spool_max_mb),
            ));
        }
        Ok(())
    }

    pub fn calls_prefix(&self) -> String {
        format!("{}.calls", self.subject_prefix)
    }

    pub fn audio_prefix(&self) -> String {
        format!("{}.audio", self.subject_prefix)
    }

    /// Connects (retrying the first connection, as a broker may start after us) and makes
    /// sure the audio stream exists.
    pub(crate) async fn connect(
        &self,
        name: &str,
    ) -> Result<(async_nats::Client, jetstream::Context)> {
        let events = self.events();
        let options = crate::sinks::nats::connect_options(&events, name)
            .await?
            .retry_on_initial_connect()
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(250 * attempts.clamp(1, 8) as u64)
            });
        let client = options
            .connect(crate::sinks::nats::server_addrs(&events)?)
            .await
            .with_context(|| format!("connecting to NATS at {}", self.servers.join(",")))?;
        let context = jetstream::new(client.clone());
        Ok((client, context))
    }

    /// Creates the audio stream if missing (an existing one is used as it is).
    pub(crate) async fn ensure_audio_stream(
        &self,
        context: &jetstream::Context,
    ) -> Result<jetstream::stream::Stream> {
        context
            .get_or_create_stream(jetstream::stream::Config {
                name: self.audio_stream.clone(),
                subjects: vec![
                    format!("{}.>", self.calls_prefix()),
                    format!("{}.>", self.audio_prefix()),
                ],
                storage: jetstream::stream::StorageType::File,
                num_replicas: self.replicas,
                max_age: Duration::from_secs_f64(self.audio_max_age_s),
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("stream {}: {e}", self.audio_stream))
    }
}

/// Why a request to the broker failed, in words: a client that is not connected says so
/// (the request's own error is only a timeout then).
pub(crate) fn why(client: &async_nats::Client, config: &RelayConfig, e: &anyhow::Error) -> String {
    if client.connection_state() == async_nats::connection::State::Connected {
        let text = format!("{e:#}");
        if text.contains("jetstream unavailable") || text.contains("does not exist") {
            format!("{text} (is nats-server started with JetStream: `nats-server -js -sd DIR`?)")
        } else {
            text
        }
    } else {
        format!(
            "not connected to NATS at {} (is it running and reachable? `-v` shows the \
             client's errors)",
            config.servers.join(",")
        )
    }
}

/// Checks that the files `[nats]` names are regular files (see
/// [`crate::sinks::nats::check_files`]).
pub fn check_files(config: &RelayConfig) -> Result<()> {
    crate::sinks::nats::check_files(&config.events(), "[nats]: the")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_subjects_and_bad_values_are_named() {
        let mut c = RelayConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        c.events_subject_prefix = "vishguard.audio".into();
        assert_eq!(c.validate().unwrap_err().0, "events_subject_prefix");
        c.events_subject_prefix = "vishguard.events".into();
        c.audio_stream = c.events_stream.clone();
        assert_eq!(c.validate().unwrap_err().0, "audio_stream");
        c.audio_stream = "VISHGUARD_AUDIO".into();
        c.claim_timeout_s = f64::NAN;
        assert_eq!(c.validate().unwrap_err().0, "claim_timeout_s");
        c.claim_timeout_s = 10.0;
        c.consumer = "a.b".into();
        assert_eq!(c.validate().unwrap_err().0, "consumer");
        c.consumer = "w".into();
        c.servers.clear();
        assert_eq!(c.validate().unwrap_err().0, "servers");
        assert_eq!("worker".parse::<Role>(), Ok(Role::Worker));
        assert!("boss".parse::<Role>().is_err());
    }
}
