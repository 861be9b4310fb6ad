//! Alerts POSTed to a URL as JSON (the versioned alert event). Each is first appended to an
//! outbox on disk, so while the endpoint is down alerts wait there (across restarts too) and
//! are sent, in order, once it is back.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Sink;
use crate::call::{json_line, Event};

/// `[[sinks]] type = "webhook"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// Where undelivered alerts wait (created if missing).
    #[serde(default = "default_outbox")]
    pub outbox: PathBuf,
    #[serde(default)]
    pub queue: super::QueueConfig,
    /// Mask card numbers, codes and id numbers (runs of 4+ digits) before they leave.
    #[serde(default)]
    pub redact: bool,
}

pub fn default_outbox() -> PathBuf {
    PathBuf::from("vishguard-outbox")
}

/// POSTs each alert to a URL. Alerts are first written to an outbox on disk, so while the
/// endpoint is down they wait there (across restarts too) and are sent, in order, once it is
/// back; retries back off from 0.25 s to 30 s. Receivers dedupe on `alert_id`.
pub struct WebhookSink {
    url: String,
    outbox: std::fs::File,
    wake: Sender<()>,
    deliverer: Option<std::thread::JoinHandle<()>>,
}

const OUTBOX: &str = "outbox.jsonl";
const DELIVERED: &str = "delivered.txt";

impl WebhookSink {
    pub fn start(url: &str, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let outbox = crate::private_files::options()
            .create(true)
            .append(true)
            .open(dir.join(OUTBOX))
            .with_context(|| format!("opening the webhook outbox in {}", dir.display()))?;
        let (wake, woken) = channel();
        let (target, folder) = (url.to_owned(), dir.to_path_buf());
        let deliverer = std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || deliver_loop(&target, &folder, woken))?;
        // Deliver what an earlier run left behind.
        let _ = wake.send(());
        Ok(Self {
            url: url.to_owned(),
            outbox,
            wake,
            deliverer: Some(deliverer),
        })
    }
}

impl Sink for WebhookSink {
    fn describe(&self) -> String {
        format!("webhook {}", self.url)
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        if let Event::Alert(_) = event {
            let line = json_line(event) + "\n";
            let written = self
                .outbox
                .write_all(line.as_bytes())
                .and_then(|_| self.outbox.sync_data());
            let _ = self.wake.send(());
            written.context("webhook outbox not written")?;
        }
        Ok(())
    }

    /// Gives the deliverer the chance to empty the outbox (it keeps trying for up to 30 s).
    fn close(&mut self) -> Result<()> {
        let (tx, _) = channel();
        drop(std::mem::replace(&mut self.wake, tx));
        if let Some(d) = self.deliverer.take() {
            let _ = d.join();
        }
        Ok(())
    }
}

fn pending(dir: &Path) -> Vec<(String, String)> {
    let delivered: HashSet<String> = std::fs::read_to_string(dir.join(DELIVERED))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let Ok(f) = std::fs::File::open(dir.join(OUTBOX)) else {
        return Vec::new();
    };
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let a: serde_json::Value = serde_json::from_str(&l).ok()?;
            let id = a.get("alert_id")?.as_str()?.to_owned();
            (!delivered.contains(&id)).then_some((id, l))
        })
        .collect()
}

fn deliver_loop(url: &str, dir: &Path, woken: Receiver<()>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let mut delivered_log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(DELIVERED))
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("webhook disabled: cannot open its delivery log: {e}");
            return;
        }
    };
    let mut backoff = Duration::from_millis(250);
    let mut closing_deadline: Option<std::time::Instant> = None;
    loop {
        let mut failed = false;
        for (id, body) in pending(dir) {
            let sent = agent
                .post(url)
                .set("Content-Type", "application/json")
                .send_string(&body);
            match sent {
                Ok(_) => {
                    let _ = writeln!(delivered_log, "{id}").and_then(|_| delivered_log.sync_data());
                    backoff = Duration::from_millis(250);
                }
                Err(e) => {
                    tracing::warn!(
                        "webhook {url} unreachable ({e}); retrying in {:.2} s",
                        backoff.as_secs_f64()
                    );
                    failed = true;
                    break;
                }
            }
        }
        let wait = if failed {
            backoff
        } else {
            Duration::from_secs(3600)
        };
        if failed {
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        if let Some(deadline) = closing_deadline {
            if !failed || std::time::Instant::now() >= deadline {
                if failed {
                    tracing::warn!(
                        "webhook: alerts left in the outbox at {}; they are sent on the next start",
                        dir.display()
                    );
                }
                return;
            }
            std::thread::sleep(wait.min(deadline - std::time::Instant::now()));
            continue;
        }
        match woken.recv_timeout(wait) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                closing_deadline = Some(std::time::Instant::now() + Duration::from_secs(30));
            }
        }
    }
}
