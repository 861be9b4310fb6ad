//! `vishguard alerts`: what waits in a webhook outbox, what the receiver refused, and sending
//! it again (see `sinks::webhook` for the outbox's layout and delivery rules).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;

use crate::sinks::nats::NatsConfig;
use crate::sinks::outbox::admin;
use crate::sinks::webhook::{check_url, default_outbox, HttpTransport};

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Print the events stored in the NATS JetStream stream (call openings, alerts,
    /// summaries), oldest first, as JSON lines; with --follow, keep printing new ones.
    Tail {
        /// Server URLs, comma-separated (nats://HOST:PORT).
        #[arg(long)]
        nats: String,
        /// The stream [default: VISHGUARD_EVENTS].
        #[arg(long)]
        stream: Option<String>,
        /// Only events stored since then: an RFC 3339 time (2026-12-01T08:00:00Z) or a span
        /// back from now (10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// Wait for new events after the stored ones (until Ctrl-C).
        #[arg(long)]
        follow: bool,
        /// Token authentication.
        #[arg(long, env = "VISHGUARD_NATS_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A NATS credentials file (.creds).
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// TLS: the CA certificates (PEM) the servers must chain to.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// Mutual TLS: this client's certificate chain (PEM); with --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// Mutual TLS: the private key of --tls-cert (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Print the undelivered alerts of an outbox as JSON lines, oldest first (or its dead
    /// letters: each with failed_at, status, reason and the alert). Reads only: safe while
    /// listen or serve delivers from it.
    List {
        /// The outbox folder [default: vishguard-outbox].
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// The dead letters instead of the undelivered alerts.
        #[arg(long)]
        dead_letters: bool,
    },
    /// Send the undelivered alerts now (in order, at least once, `Idempotency-Key:
    /// <alert_id>`), with the dead letters first put back in the outbox when asked. Needs the
    /// outbox to itself: stop the process that delivers from it first.
    Replay {
        /// Where to POST them.
        #[arg(long)]
        url: String,
        /// The outbox folder [default: vishguard-outbox].
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// Put the dead letters back at the end of the outbox and send them too.
        #[arg(long)]
        dead_letters: bool,
        /// Give up after this many seconds of a receiver that does not answer or says
        /// "later" (408, 429, 5xx); what is left stays in the outbox.
        #[arg(long, default_value_t = 60.0)]
        timeout_s: f64,
    },
}

/// Exit code: 0, or 1 when `replay` left alerts undelivered.
pub fn run(cmd: AlertsCommand) -> Result<i32> {
    match cmd {
        AlertsCommand::Tail {
            nats,
            stream,
            since,
            follow,
            token,
            credentials,
            tls_ca,
            tls_cert,
            tls_key,
        } => {
            let mut config = NatsConfig::for_servers(crate::sinks::nats::servers(&nats));
            if let Some(s) = stream {
                config.stream = s;
            }
            config.token = token;
            config.credentials = credentials;
            config.tls_ca = tls_ca;
            config.tls_client_cert = tls_cert;
            config.tls_client_key = tls_key;
            let since = since.map(|s| parse_since(&s)).transpose()?;
            let n =
                crate::sinks::nats::tail(&config, since, follow, &mut std::io::stdout().lock())?;
            eprintln!("{n} event(s) from stream {}", config.stream);
            Ok(0)
        }
        AlertsCommand::List {
            outbox,
            dead_letters,
        } => {
            let dir = outbox.unwrap_or_else(default_outbox);
            let lines = if dead_letters {
                admin::dead_letters(&dir)?
            } else {
                admin::pending(&dir)?
            };
            for l in &lines {
                println!("{l}");
            }
            eprintln!(
                "{} {} in {}",
                lines.len(),
                if dead_letters {
                    "dead letter(s)"
                } else {
                    "undelivered alert(s)"
                },
                dir.display()
            );
            Ok(0)
        }
        AlertsCommand::Replay {
            url,
            outbox,
            dead_letters,
            timeout_s,
        } => {
            let dir = outbox.unwrap_or_else(default_outbox);
            if !(timeout_s.is_finite() && timeout_s >= 0.0) {
                anyhow::bail!("--timeout-s must be a number of seconds >= 0, not {timeout_s}");
            }
            if dead_letters {
                let n = admin::requeue_dead_letters(&dir)?;
                eprintln!("{n} dead letter(s) put back in the outbox");
            }
            check_url(&url).map_err(|p| anyhow::anyhow!("--url {p}"))?;
            let mut transport = HttpTransport::new(&url);
            let r = admin::replay(&dir, &mut transport, Duration::from_secs_f64(timeout_s))?;
            let dead = admin::dead_letters(&dir)?.len();
            eprintln!(
                "{} alert(s) settled (delivered, or refused for good: {dead} dead letter(s) \
                 now); {} left in {}{}",
                r.settled,
                r.left,
                dir.display(),
                r.last_failure
                    .map(|f| format!(" (the last try: {f})"))
                    .unwrap_or_default()
            );
            let left = r.left;
            Ok(if left > 0 { 1 } else { 0 })
        }
    }
}

/// An RFC 3339 time, or a span back from now ("10m"); between 1970 and now.
fn parse_since(s: &str) -> Result<std::time::SystemTime> {
    let now = std::time::SystemTime::now();
    let t = match humantime::parse_rfc3339_weak(s) {
        Ok(t) => Some(t),
        Err(_) => match humantime::parse_duration(s) {
            Ok(d) => Some(now.checked_sub(d).unwrap_or(std::time::UNIX_EPOCH)),
            Err(_) => None,
        },
    };
    let looks_like_a_date =
        s.len() >= 5 && s[..4].bytes().all(|b| b.is_ascii_digit()) && s.as_bytes()[4] == b'-';
    let Some(t) = t else {
        if looks_like_a_date {
            anyhow::bail!("--since {s:?}: not a time between 1970 and now (RFC 3339, UTC)");
        }
        anyhow::bail!(
            "--since {s:?}: neither an RFC 3339 time (2026-12-01T08:00:00Z) nor a span (10m, 2h)"
        );
    };
    if t > now {
        anyhow::bail!("--since {s:?} is in the future");
    }
    if t <= std::time::UNIX_EPOCH {
        anyhow::bail!("--since {s:?} is before 1970 (use no --since for everything)");
    }
    Ok(t)
}
