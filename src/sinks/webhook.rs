//! Alerts POSTed to a URL as JSON (the versioned alert event), at least once, in order, from an
//! outbox on disk ([`super::outbox`]: write-ahead, cursor, dead letters, back-off).
//!
//! Each POST carries `Idempotency-Key: <alert_id>`. A 2xx settles the alert; a 4xx other than
//! 408 and 429 is a refusal for good (to the dead letters, with the status and the receiver's
//! reason); anything else (no connection, a timeout, 408, 429, 5xx) is retried, obeying
//! `Retry-After`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::outbox::{OutboxSink, Sent, Transport, MAX_RETRY_AFTER};
use crate::call::Event;

pub use super::outbox::default_max_pending;

/// `[[sinks]] type = "webhook"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Where undelivered alerts wait (created if missing).
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    /// Undelivered alerts the outbox holds at most; beyond, alerts go to the dead letters.
    #[serde(default = "default_max_pending")]
    pub max_pending: u64,
    #[serde(default)]
    pub queue: super::QueueConfig,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) before they leave.
    #[serde(default)]
    pub redact: bool,
}

pub fn default_outbox() -> PathBuf {
    PathBuf::from("vishguard-outbox")
}

/// Starts the webhook: an [`OutboxSink`] of the alerts, POSTing them.
pub struct WebhookSink;

impl WebhookSink {
    pub fn start(config: &WebhookConfig) -> Result<OutboxSink> {
        OutboxSink::start(
            &config.outbox,
            config.max_pending,
            |e| matches!(e, Event::Alert(_)),
            Box::new(HttpTransport::new(&config.url)),
        )
    }
}

/// POSTs to a URL.
pub struct HttpTransport {
    url: String,
    agent: ureq::Agent,
}

impl HttpTransport {
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            // Redirects are not followed: the idempotency key and the alert would go to
            // whatever host the receiver names.
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(5))
                .redirects(0)
                .build(),
        }
    }
}

/// `Err(problem)` unless `url` is an http:// or https:// URL with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let host = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
        return Err(format!("must be an http:// or https:// URL, not {url:?}"));
    }
    Ok(())
}

impl Transport for HttpTransport {
    fn describe(&self) -> String {
        format!("webhook {}", self.url)
    }

    fn labels(&self) -> (&'static str, &'static str) {
        ("webhook outbox", "webhook dead letters")
    }

    fn send(&mut self, line: &str, key: Option<&str>) -> Sent {
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        if let Some(key) = key {
            request = request.set("Idempotency-Key", key);
        }
        match request.send_string(line) {
            Ok(response) if (200..300).contains(&response.status()) => Sent::Delivered,
            Ok(response) => {
                let code = response.status();
                let to = response.header("Location").unwrap_or("nowhere").to_owned();
                Sent::Refused(
                    Some(code),
                    format!(
                        "HTTP {code} to {to}: webhooks are not redirected (give the receiver's \
                         address itself)"
                    ),
                )
            }
            Err(ureq::Error::Status(code, response)) => {
                let retry_after = response
                    .header("Retry-After")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                let mut body = String::new();
                let _ = response.into_reader().take(512).read_to_string(&mut body);
                let reason = format!("HTTP {code}: {}", body.trim());
                if (400..500).contains(&code) && code != 408 && code != 429 {
                    Sent::Refused(Some(code), reason)
                } else {
                    Sent::Later(reason, retry_after)
                }
            }
            Err(ureq::Error::Transport(t))
                if matches!(
                    t.kind(),
                    ureq::ErrorKind::InvalidUrl
                        | ureq::ErrorKind::UnknownScheme
                        | ureq::ErrorKind::BadHeader
                ) =>
            {
                // A request that can never be sent: retrying would block every later alert.
                Sent::Refused(None, t.to_string())
            }
            Err(e) => Sent::Later(e.to_string(), None),
        }
    }
}
