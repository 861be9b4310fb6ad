//! Where live alerts go: standard output (JSON lines), an append-only file (synced per alert),
//! a webhook with an on-disk outbox, and a readable view in the terminal.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::detect::Risk;
use crate::live::{EventSink, LiveAlert, LiveEvent};

/// JSON lines on stdout: alerts and call summaries (and transcripts when asked).
pub struct JsonLinesSink {
    pub transcripts: bool,
}

impl EventSink for JsonLinesSink {
    fn handle(&mut self, event: &LiveEvent) {
        let line = match event {
            LiveEvent::Alert(a) => serde_json::to_string(a),
            LiveEvent::Transcript { .. } if !self.transcripts => return,
            other => serde_json::to_string(other),
        };
        if let Ok(line) = line {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
}

/// Appends each alert to a file and syncs it to disk before going on.
pub struct AlertFileSink {
    file: std::fs::File,
    path: PathBuf,
}

impl AlertFileSink {
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open alert file {}", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }
}

impl EventSink for AlertFileSink {
    fn handle(&mut self, event: &LiveEvent) {
        if let LiveEvent::Alert(a) = event {
            let line = serde_json::to_string(a).expect("alerts serialise") + "\n";
            if let Err(e) = self
                .file
                .write_all(line.as_bytes())
                .and_then(|_| self.file.sync_data())
            {
                tracing::error!("{}: alert not written: {e}", self.path.display());
            }
        }
    }
}

/// POSTs each alert to a URL. Alerts are first written to an outbox on disk, so while the
/// endpoint is down they wait there (across restarts too) and are sent, in order, once it is
/// back; retries back off from 0.25 s to 30 s. Receivers dedupe on `alert_id`.
pub struct WebhookSink {
    outbox: std::fs::File,
    wake: Sender<()>,
    deliverer: Option<std::thread::JoinHandle<()>>,
}

const OUTBOX: &str = "outbox.jsonl";
const DELIVERED: &str = "delivered.txt";

impl WebhookSink {
    pub fn start(url: &str, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let outbox = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(OUTBOX))
            .with_context(|| format!("opening the webhook outbox in {}", dir.display()))?;
        let (wake, woken) = channel();
        let url = url.to_owned();
        let dir = dir.to_path_buf();
        let deliverer = std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || deliver_loop(&url, &dir, woken))?;
        // Deliver what an earlier run left behind.
        let _ = wake.send(());
        Ok(Self {
            outbox,
            wake,
            deliverer: Some(deliverer),
        })
    }
}

impl EventSink for WebhookSink {
    fn handle(&mut self, event: &LiveEvent) {
        if let LiveEvent::Alert(a) = event {
            let line = serde_json::to_string(a).expect("alerts serialise") + "\n";
            if let Err(e) = self
                .outbox
                .write_all(line.as_bytes())
                .and_then(|_| self.outbox.sync_data())
            {
                tracing::error!("webhook outbox not written: {e}");
            }
            let _ = self.wake.send(());
        }
    }
}

impl Drop for WebhookSink {
    /// Gives the deliverer the chance to empty the outbox (it keeps trying for up to 30 s).
    fn drop(&mut self) {
        let (tx, _) = channel();
        drop(std::mem::replace(&mut self.wake, tx));
        if let Some(d) = self.deliverer.take() {
            let _ = d.join();
        }
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
            let a: LiveAlert = serde_json::from_str(&l).ok()?;
            (!delivered.contains(&a.alert_id)).then_some((a.alert_id, l))
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

/// A readable, colored line per utterance for a person following the call.
pub struct TerminalView;

impl EventSink for TerminalView {
    fn handle(&mut self, event: &LiveEvent) {
        let (reset, red, yellow, dim, bold) =
            ("\x1b[0m", "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[1m");
        let line = match event {
            LiveEvent::Transcript { call_id, party, start_s, text, risk, score, .. } => {
                let (color, tag) = match risk {
                    Risk::None => (dim, "     "),
                    Risk::Suspected => (yellow, "SUSP "),
                    Risk::High => (red, "HIGH "),
                };
                format!("{color}{tag}{reset}{dim}{call_id}#{party} {start_s:7.1}s{reset} {text} {dim}({score:.2}){reset}")
            }
            LiveEvent::Alert(a) => format!(
                "{bold}{red}ALERT{reset} {} {:.1}s {}: \"{}\" (score {:.2}, {:.1} s after the words)",
                a.call_id, a.t_s, a.category, a.matched_text, a.score, a.latency_s
            ),
            LiveEvent::CallEnded(s) => format!(
                "{bold}call {} ended{reset}: risk {:?}, score {:.2}, {} alerts, {} utterances, {:.1} s audio dropped",
                s.call_id, s.risk, s.score, s.alerts, s.utterances, s.dropped_audio_s
            ),
        };
        eprintln!("{line}");
    }
}
